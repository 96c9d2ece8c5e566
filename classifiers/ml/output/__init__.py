"""TODO: map of classifiers.ml.output."""
