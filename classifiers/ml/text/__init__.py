"""Text: what a prompt says once cheap disguises are taken off. Pure Python, no model.

  confusables.py  zero-width characters, homoglyphs, leetspeak, split letters:
                  the tables (shared with data/rewrites.py) and the folds
                  (`deobfuscate`).
  decoders.py     encodings: base64 / ROT13 / Caesar / reversal encoders and
                  decoders, English-likeness scores, per-line decoding, and
                  `strip_instructions` ("Decode this and answer:" lines).
  canonical.py    canonical views of a prompt (`prompt_views`, `canonical_views`):
                  what the input classifier scores, max over views.
  frames.py       known jailbreak frames (role-play, DAN, system claims, many-shot,
                  the seed red-team templates) and `strip_known_frame`.

Import direction: confusables <- decoders <- canonical; frames is a leaf used by
canonical and by data/ (the augmenter wraps prompts in the same frames).
"""
