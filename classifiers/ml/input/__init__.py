"""TODO: map of classifiers.ml.input."""
