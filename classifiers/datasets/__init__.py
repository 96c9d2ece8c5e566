"""Synthetic data: start a generation run (services), build it on the worker (run),
the generator it uses (generators), its examples by split and review feedback as
examples (examples), where rows came from (lineage), combining datasets (combine),
export, forms, pages and the task."""
