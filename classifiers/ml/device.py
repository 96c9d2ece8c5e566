"""The one device picker: CUDA when present, else CPU (or what the caller names).

`pick_device` returns a `torch.device` (model code); `pick_device_name` is the thin
string variant the registry and Celery glue pass around ("cuda" / "cpu"). torch is
imported inside the functions so importing this module (e.g. from the registry,
which Django-side code loads) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device; None picks CUDA when available, else CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_device_name(prefer: str | None = None) -> str:
    """The same choice as a string: `prefer` when given, else "cuda" or "cpu"."""
    if prefer:
        return prefer
    return pick_device().type
