"""Training runs: settings (config), start and cancel (services), the worker side
that loads rows, calls classifiers.ml.pipeline and saves the results (run), the
model registry (activate, roll back, classify), pages and the task."""
