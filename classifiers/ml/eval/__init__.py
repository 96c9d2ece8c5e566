"""TODO: map of classifiers.ml.eval."""
