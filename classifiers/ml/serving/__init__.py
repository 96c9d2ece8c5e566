"""TODO: map of classifiers.ml.serving."""
