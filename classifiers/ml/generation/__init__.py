"""TODO: map of classifiers.ml.generation."""
