"""Guardweb's ML core: plain Python + torch + transformers, never Django.

Everything here is importable and testable without Django settings; the Django
apps and Celery tasks are thin glue around these modules. Map (each sub-package's
__init__ says what lives inside it):

  types.py        Example, ConstitutionSpec, ChatGenerator, Cancelled, check_cancelled
  device.py       the one device picker (pick_device, pick_device_name)
  registry.py     where the bundled models are (encoder, generator) on disk
  checkpoints.py  the artifact format classifiers are saved in
  text/           canonical views of a prompt: decoders, confusables, jailbreak frames
  generation/     chat generators (local batched decoding, OpenAI-compatible client)
  data/           Stage I data, Stage II augmentation, red teaming, splits, dataset files
  input/          the input (prompt) classifier: model, losses, training, scoring, save/load
  output/         the streaming output classifier: value head, losses, training, save/load,
                  and output/scoring.py, THE per-token score rule
  serving/        guarded generation: single stream, continuous batching, cascade, engine
  eval/           metrics, threshold calibration, label audit, cascade calibration
  pipeline.py     one training run: train -> calibrate -> evaluate -> save the guard

Lower layers never import higher ones: types/device/registry/checkpoints <- text <-
data; generation; eval/{evaluate,calibrate} <- input, output <- serving <- eval's
cascade and label-audit modules (which sit on top of input/output) <- pipeline.
"""
