"""Serving: guarded generation and streaming scoring with a trained output classifier.

A token's score is computed in ONE place: classifiers/ml/output/scoring.py
(`token_probs` -> `make_aggregator(...).update` -> `reaches`); everything here
calls it.

  tokens.py    TokenScore (one streamed token: prob, running score, halted),
               IncrementalDecoder, `sample_token`, `eos_ids`.
  stream.py    a single stream: `generate_with_scores` / `generate_plain` (we
               generate) and StreamingScorer (someone else generates).
  batching.py  ContinuousBatcher: many concurrent streams, one forward per step.
  cascade.py   StreamingCascade: the probe + heavy classifier cascade per stream.
  engine.py    GuardEngine: input guard + output guard + cascade, per mode.

Import direction: tokens <- stream <- batching; cascade; engine on top. serving
imports output/ (and eval/calibrate.py's Thresholds), never the other way round.
"""
