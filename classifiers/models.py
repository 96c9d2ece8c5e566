"""Datasets, training runs and model versions (filled in by the data and training issues)."""
