"""Evaluation sets: labelled prompt files users bring to judge guards (sets), a job
that scores one input model on one set (run, services, tasks), and their pages."""
