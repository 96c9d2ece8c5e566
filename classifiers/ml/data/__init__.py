"""TODO: map of classifiers.ml.data."""
