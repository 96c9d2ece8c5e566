"""Model artifacts as immutable, checksummed folders.

An artifact is a folder holding one `<stem>.safetensors` file per state dict, one
`<name>.json` file per extra document (thresholds, metrics, ...) and a
`manifest.json` that lists every file with its sha256, the config, the code version,
the format version, the creation time and one overall checksum.

Writing is crash-safe: everything goes into a hidden temporary sibling folder, every
file and the folder are fsynced, and only then is the folder renamed into place with
`os.replace` (atomic on POSIX). A crash or an exception therefore never leaves a
half-written artifact at the final path; readers see either nothing or all of it.
Artifacts are immutable: saving onto an existing path is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# Stems become file names; keep them boring so no stem can escape the folder or
# collide with the manifest.
_STEM_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_HASH_CHUNK_BYTES = 1 << 20


class ArtifactError(Exception):
    """An artifact is missing, incomplete, tampered with or of an unknown format."""


@dataclass
class LoadedArtifact:
    directory: Path  # where it was loaded from
    tensors: dict[str, dict[str, torch.Tensor]]  # file stem -> state dict (on CPU)
    config: dict[str, Any]  # the config given to save_artifact
    extra: dict[str, Any]  # extra JSON documents by name ("thresholds", ...)
    code_version: str  # code version that wrote the artifact
    checksum: str  # overall checksum, as returned by save_artifact
    created_at: str  # ISO 8601 UTC time of writing
    manifest: dict[str, Any] = field(default_factory=dict)  # the raw manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _overall_checksum(
    files: dict[str, str], config: dict[str, Any], code_version: str, fmt: int
) -> str:
    # Canonical JSON (sorted keys, no whitespace) so the checksum depends only on
    # content, never on dict order. created_at is left out on purpose: two saves
    # of identical content get the same checksum.
    payload = {
        "files": files,
        "config": config,
        "code_version": code_version,
        "format_version": fmt,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _fsync_path(path: Path) -> None:
    # Directories must be fsynced too, or a crash can lose the rename / new entries.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, document: Any) -> None:
    # allow_nan=False: NaN/Infinity are not JSON and other readers would choke.
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _check_stem(stem: str, what: str) -> None:
    if not _STEM_PATTERN.match(stem) or stem == "manifest":
        raise ValueError(f"invalid {what} name {stem!r} (use letters, digits, _ . -)")


def save_artifact(
    directory: Path | str,
    *,
    tensors: dict[str, dict[str, torch.Tensor]],
    config: dict[str, Any],
    extra_json: dict[str, Any] | None = None,
    code_version: str,
) -> str:
    """Write an artifact folder atomically and return its overall checksum.

    `tensors` maps a file stem to a state dict (saved as `<stem>.safetensors`),
    `extra_json` maps a name to a JSON document (saved as `<name>.json`).
    Raises FileExistsError when `directory` already exists (artifacts are immutable).
    """
    target = Path(directory)
    if target.exists():
        raise FileExistsError(f"artifact already exists at {target}")
    extra_json = extra_json or {}
    for stem in tensors:
        _check_stem(stem, "tensor file")
    for name in extra_json:
        _check_stem(name, "extra json")
    if set(tensors) & set(extra_json):
        raise ValueError("tensor stems and extra json names must differ")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        files: dict[str, str] = {}
        for stem, state_dict in tensors.items():
            file_name = f"{stem}.safetensors"
            # Clone to contiguous CPU tensors: safetensors refuses tensors that
            # share storage (tied weights) and non-contiguous views.
            cpu_state = {
                key: value.detach().to("cpu").contiguous().clone()
                for key, value in state_dict.items()
            }
            save_file(cpu_state, str(staging / file_name), metadata={"stem": stem})
            with open(staging / file_name, "rb+") as handle:
                os.fsync(handle.fileno())
            files[file_name] = sha256_file(staging / file_name)
        for name, document in extra_json.items():
            file_name = f"{name}.json"
            _write_json(staging / file_name, document)
            files[file_name] = sha256_file(staging / file_name)

        checksum = _overall_checksum(files, config, code_version, FORMAT_VERSION)
        manifest = {
            "format_version": FORMAT_VERSION,
            "code_version": code_version,
            "created_at": datetime.now(UTC).isoformat(),
            "config": config,
            "files": files,
            "checksum": checksum,
        }
        _write_json(staging / MANIFEST_NAME, manifest)
        _fsync_path(staging)
        # The one atomic step: before it nothing is at `target`, after it all is.
        os.replace(staging, target)
        _fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved artifact %s (checksum %s)", target, checksum[:12])
    return checksum


# Staging folders are ".<name>.tmp-<hex>" beside their target (see save_artifact).
_STAGING = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")


def remove_partial_artifacts(
    root: Path | str, *, older_than_seconds: float, max_depth: int = 4
) -> list[Path]:
    """Delete staging folders a killed process left under `root`; return them.

    A crash between staging.mkdir() and the rename leaves a hidden folder that no
    record points at. Only folders untouched for `older_than_seconds` go, so a
    save still in progress in another process is left alone.
    """
    import time

    root = Path(root)
    cutoff = time.time() - older_than_seconds
    removed: list[Path] = []
    frontier = [(root, 0)] if root.is_dir() else []
    while frontier:
        folder, depth = frontier.pop()
        for entry in os.scandir(folder):
            if not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            if _STAGING.match(entry.name):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
                    logger.warning("removed a half-written artifact folder %s", path)
            elif depth + 1 < max_depth and not entry.name.startswith("."):
                frontier.append((path, depth + 1))
    return removed


def read_manifest(directory: Path | str) -> dict[str, Any]:
    """The parsed manifest of an artifact, without verifying any file."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"no {MANIFEST_NAME} in {directory}: not an artifact")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"unreadable manifest in {directory}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"malformed manifest in {directory}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {directory} has format version {version!r}; "
            f"this code reads version {FORMAT_VERSION}"
        )
    return manifest


def verify_artifact(directory: Path | str) -> dict[str, Any]:
    """Check every file's sha256 and the overall checksum; return the manifest."""
    root = Path(directory)
    manifest = read_manifest(root)
    try:
        files: dict[str, str] = manifest["files"]
        config = manifest["config"]
        code_version = manifest["code_version"]
        recorded = manifest["checksum"]
    except KeyError as exc:
        raise ArtifactError(f"manifest in {root} lacks {exc}") from exc
    for file_name, expected in sorted(files.items()):
        path = root / file_name
        if not path.is_file():
            raise ArtifactError(f"artifact {root} is missing {file_name}")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"checksum mismatch for {file_name} in {root}: manifest says "
                f"{expected[:12]}…, file has {actual[:12]}… (modified or corrupt)"
            )
    expected_overall = _overall_checksum(files, config, code_version, FORMAT_VERSION)
    if expected_overall != recorded:
        raise ArtifactError(
            f"overall checksum mismatch in {root}: the manifest was edited"
        )
    return manifest


def load_artifact(directory: Path | str) -> LoadedArtifact:
    """Verify and load an artifact; tensors are loaded on CPU."""
    root = Path(directory)
    manifest = verify_artifact(root)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    extra: dict[str, Any] = {}
    # The file list is covered by the overall checksum, so derive everything from it.
    for file_name in sorted(manifest["files"]):
        path = root / file_name
        if file_name.endswith(".safetensors"):
            try:
                tensors[path.stem] = load_file(str(path), device="cpu")
            except Exception as exc:  # safetensors raises its own error types
                raise ArtifactError(f"cannot read {file_name}: {exc}") from exc
        elif file_name.endswith(".json"):
            try:
                extra[path.stem] = json.loads(path.read_text("utf-8"))
            except ValueError as exc:
                raise ArtifactError(f"cannot parse {file_name}: {exc}") from exc
    return LoadedArtifact(
        directory=root,
        tensors=tensors,
        config=manifest["config"],
        extra=extra,
        code_version=manifest["code_version"],
        checksum=manifest["checksum"],
        created_at=manifest.get("created_at", ""),
        manifest=manifest,
    )
