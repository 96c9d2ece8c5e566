"""Output classifier: a value head on the generator that scores a response per token.

  value_head.py   ValueHead, CausalLMWithValueHead (the LM + head, one forward),
                  minimal LoRA.
  model.py        OutputClassifierConfig, `load_backbone`, `build_model`.
  encoding.py     chat template -> token ids (`prompt_token_ids`), examples ->
                  padded batches (`encode_example`, `collate`, `tokenizer_pad_id`).
  scoring.py      THE per-token score rule (sigmoid of the head logit -> running
                  aggregate -> threshold), offline helpers, `score_responses`.
  losses.py       running-max, window and next-token losses.
  training.py     `train_output_classifier` (fast probe / full / LoRA).
  persistence.py  save/load an output classifier artifact.

serving/ sits on top of this package (never the other way round).
"""
