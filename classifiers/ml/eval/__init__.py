"""Evaluation and calibration.

  evaluate.py             metrics (AUROC, TPR at FPR, ...) and evaluation reports.
  calibrate.py            thresholds (Thresholds, per category) from calibration scores.
  label_audit.py          cross-validated label audit of a dataset (input classifier).
  cascade.py              the offline probe -> heavy cascade, band calibration, probe
                          options compared.
  cascade_calibration.py  the streaming cascade's band/weight/threshold calibration
                          and evaluation (replays serving/cascade.py).

evaluate.py and calibrate.py are leaves (types only) that input/, output/ and
serving/ import; label_audit.py and the cascade modules sit above input/output.
"""
