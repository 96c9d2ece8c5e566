from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from classifiers.ml import checkpoints
from classifiers.ml.checkpoints import ArtifactError, load_artifact, save_artifact


def _tensors() -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(4, 3, generator=generator)
    return {
        "head": {"w": torch.randn(3, 2, generator=generator), "b": torch.zeros(2)},
        # Tied weights and a non-contiguous view: both must still save.
        "backbone": {"emb": shared, "tied": shared, "t": shared.t()},
    }


def _save(target: Path, **overrides: object) -> str:
    kwargs: dict[str, object] = {
        "tensors": _tensors(),
        "config": {"mode": "fast", "hidden": 8},
        "extra_json": {"thresholds": {"global": 0.5}, "metrics": {"auroc": 0.9}},
        "code_version": "abc123",
    }
    kwargs.update(overrides)
    return save_artifact(target, **kwargs)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "artifacts" / "a1"
    checksum = _save(target)
    loaded = load_artifact(target)
    original = _tensors()
    assert set(loaded.tensors) == {"head", "backbone"}
    for stem, state in original.items():
        for key, value in state.items():
            assert torch.equal(loaded.tensors[stem][key], value)
            assert loaded.tensors[stem][key].device.type == "cpu"
    assert loaded.config == {"mode": "fast", "hidden": 8}
    assert loaded.extra == {"thresholds": {"global": 0.5}, "metrics": {"auroc": 0.9}}
    assert loaded.code_version == "abc123"
    assert loaded.checksum == checksum and len(checksum) == 64
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["format_version"] == checkpoints.FORMAT_VERSION
    assert set(manifest["files"]) == {
        "head.safetensors",
        "backbone.safetensors",
        "thresholds.json",
        "metrics.json",
    }
    # No staging folder left behind.
    assert [p.name for p in target.parent.iterdir()] == ["a1"]


def test_checksum_depends_on_content_only(tmp_path: Path) -> None:
    first = _save(tmp_path / "one")
    second = _save(tmp_path / "two")
    assert first == second
    changed = _save(tmp_path / "three", config={"mode": "full", "hidden": 8})
    assert changed != first


def test_existing_target_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a"
    _save(target)
    with pytest.raises(FileExistsError):
        _save(target)


def test_tampered_tensor_file_is_detected(tmp_path: Path) -> None:
    target = tmp_path / "a"
    _save(target)
    path = target / "head.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="head.safetensors"):
        load_artifact(target)


def test_tampered_json_and_missing_file_are_detected(tmp_path: Path) -> None:
    target = tmp_path / "a"
    _save(target)
    (target / "thresholds.json").write_text('{"global": 0.01}\n')
    with pytest.raises(ArtifactError, match="thresholds.json"):
        load_artifact(target)

    other = tmp_path / "b"
    _save(other)
    (other / "metrics.json").unlink()
    with pytest.raises(ArtifactError, match="missing metrics.json"):
        load_artifact(other)


def test_edited_manifest_is_detected(tmp_path: Path) -> None:
    target = tmp_path / "a"
    _save(target)
    manifest_path = target / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["hidden"] = 9999
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest was edited"):
        load_artifact(target)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not an artifact"):
        load_artifact(tmp_path)


def test_exception_while_writing_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a"
    # The tensors are written first; the unserialisable JSON then fails mid-write.
    with pytest.raises(TypeError):
        _save(target, extra_json={"metrics": {"bad": object()}})
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_crash_before_rename_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a"

    def exploding_replace(src: object, dst: object) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(checkpoints.os, "replace", exploding_replace)
    with pytest.raises(OSError, match="simulated crash"):
        _save(target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_stem_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _save(tmp_path / "a", tensors={"../escape": {"w": torch.zeros(1)}})
    with pytest.raises(ValueError):
        _save(tmp_path / "b", extra_json={"manifest": {}})
