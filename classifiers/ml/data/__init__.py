"""Data: Stage I synthetic data, Stage II augmentation, and dataset assembly.

Stage I (queries and responses from a chat generator, per constitution category):
  prompts.py     GenerateConfig, the few-shot query prompt, openers, response prompt.
  filters.py     what to drop: refusals, degenerate text, narration, non-requests
                 (`rejection_reason`), and `RelevanceFilter` (embedding similarity).
  stage1.py      `generate_stage1`: queries -> filtered Examples -> responses;
                 `response_label` (what the OUTPUT classifier learns).
Stage II (variants of every example):
  rewrites.py    the text/conversation rewrite functions (encodings, obfuscations,
                 jailbreak frames, split turns).
  transforms.py  named, seeded, composable Transform objects over those rewrites
                 (TRANSFORMS, FAMILIES, `apply_transforms`, `sample_chain`).
  augment.py     `augment_examples`: transforms applied to a dataset (LLM ones batched).
  redteam.py     LLM-generated jailbreak templates (the seed frames are text/frames.py).
Assembly:
  dedupe.py      MinHash near-duplicate removal.
  splits.py      SPLITS, `split_by_source` (by source query, held-out transform families).
  assemble.py    `build_dataset`: Stage I + augmentation + splits -> BuiltDataset.
  combine.py     merging datasets.
  io.py          Example <-> rows, JSONL and Parquet.
Everyday traffic (benign negatives no constitution describes):
  everyday.py    generated everyday requests over a broad list of topics.
  traffic.py     traffic pools: cleaning, near-duplicates, stable splits, examples,
                 the generator's replies.

Import direction: prompts <- filters <- stage1 <- assemble; rewrites <- transforms
<- augment; everything here may import text/ and types, never input/output/serving.
"""
