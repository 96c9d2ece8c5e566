"""TODO: map of classifiers.ml.text."""
