"""Evaluation and calibration.

  intervals.py            Wilson 95% intervals and the sample-size rule (5 / rate).
  evaluate.py             metrics (AUROC, TPR at FPR, ...) and evaluation reports,
                          every rate with its interval and sample-size warnings.
  calibrate.py            thresholds (Thresholds, per category) from calibration scores.
  label_audit.py          cross-validated label audit of a dataset (input classifier).
  cascade.py              the offline probe -> heavy cascade, band calibration, probe
                          options compared.
  cascade_calibration.py  the streaming cascade's band/weight/threshold calibration
                          and evaluation (replays serving/cascade.py).
  labelled_sets.py        labelled prompt files (JSONL/CSV/Parquet) and a report
                          per kind of prompt (recall and FPR with intervals).

intervals.py, evaluate.py and calibrate.py are leaves (types only) that input/, output/ and
serving/ import; label_audit.py and the cascade modules sit above input/output.
"""
