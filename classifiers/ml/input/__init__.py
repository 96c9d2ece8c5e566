"""Input classifier: scores a prompt for harmful intent and names its category.

  model.py        InputClassifierConfig, InputHead, InputClassifier (sentence
                  encoder + head), batch encoding, `embed_texts`, `sentence_embedder`.
  losses.py       targets and the loss (harm BCE + category cross-entropy).
  training.py     `train_input_classifier` (fast: cached embeddings; full: fine-tune).
  scoring.py      InputScore, `predict_texts`, `score_texts` (max over canonical views,
                  text/canonical.py), `score_examples`.
  persistence.py  save/load an input classifier artifact (checkpoints.py format).

Import direction: model <- losses <- training; model <- scoring; persistence on top.
"""
