"""Read a CTranslate2 Whisper ``model.bin`` and map it onto transformers parameter names.

Layout of ``model.bin`` (spec revision 3+): uint32 version, string spec name, uint32
revision, uint32 count, then per variable: string name, uint8 rank, rank x uint32 dims,
uint8 dtype, uint32 byte count, raw bytes; then uint32 alias count and (alias, target)
string pairs. A string is a uint16 length (trailing NUL included) + bytes.

The mapping is the inverse of ``ctranslate2.converters.transformers.WhisperLoader``:
self-attention ``linear_0`` is fused [q; k; v] (the k bias slice is zero: transformers'
``k_proj`` has no bias), cross-attention ``linear_0`` is q and ``linear_1`` fused [k; v],
``decoder/projection/weight`` aliases the token embedding, and rank-0 variables are
settings. Every source variable must be used exactly once; leftovers are an error.
"""

from __future__ import annotations

import math
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from whisperlens.errors import CorruptWeightsError, ModelNotAvailableError
from whisperlens.models.registry import WhisperDims

_DTYPES = {
    0: torch.float32,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.float16,
    5: torch.bfloat16,
}
_GELU = 3  # ctranslate2 ActivationType.GELU
# Settings whose value must be this for the transformers architecture to be equivalent.
_REQUIRED_SETTINGS = {
    "decoder/activation": _GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
}
# Settings that do not change the computation (alignment heads come from config.json).
_IGNORED_SETTINGS = frozenset(
    {
        "decoder/alignment_heads",
        "decoder/alignment_layer",
        "decoder/start_from_zero_embedding",
        "decoder/alibi_use_positive_positions",
    }
)


@dataclass(frozen=True)
class Ct2Model:
    """The raw content of a CTranslate2 ``model.bin``."""

    spec: str  # "WhisperSpec"
    revision: int  # spec revision
    variables: dict[str, torch.Tensor]  # name -> tensor in its stored dtype
    aliases: dict[str, str]  # alias name -> target variable name


class _Reader:
    """Sequential little-endian reader over one buffer."""

    def __init__(self, buf: bytearray, origin: str):
        self.buf, self.pos, self.origin = buf, 0, origin

    def unpack(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise self.truncated()
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values

    def string(self) -> str:
        (n,) = self.unpack("<H")
        raw = self.take_bytes(n)
        return bytes(raw[:-1]).decode("utf-8")

    def take_bytes(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise self.truncated()
        view = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return view

    def truncated(self) -> CorruptWeightsError:
        return CorruptWeightsError(
            f"{self.origin} ends early at byte {self.pos} of {len(self.buf)} (truncated or a "
            "missing part)",
            "reinstall the package that ships it, or re-convert the model with ct2-transformers-converter",
        )


def _read_variable(r: _Reader) -> tuple[str, torch.Tensor]:
    name = r.string()
    (rank,) = r.unpack("<B")
    shape = r.unpack(f"<{rank}I") if rank else ()
    (code,) = r.unpack("<B")
    (nbytes,) = r.unpack("<I")
    if code not in _DTYPES:
        raise CorruptWeightsError(f"{r.origin}: variable {name!r} has unknown dtype code {code}")
    start = r.pos
    r.take_bytes(nbytes)
    dtype = _DTYPES[code]
    count = nbytes // dtype.itemsize
    tensor = torch.frombuffer(r.buf, dtype=dtype, count=count, offset=start) if count else None
    if tensor is None or tensor.numel() != math.prod(shape):
        raise CorruptWeightsError(f"{r.origin}: variable {name!r} has {nbytes} bytes for {shape}")
    return name, tensor.reshape(shape)


def read_model_bin(parts: Sequence[Path]) -> Ct2Model:
    """Parse a ``model.bin`` given as one file or its pieces in order."""
    origin = " + ".join(p.name for p in parts)
    buf = bytearray()
    for part in parts:
        buf += Path(part).read_bytes()
    r = _Reader(buf, origin)
    (_version,) = r.unpack("<I")
    spec = r.string()
    (revision,) = r.unpack("<I")
    (count,) = r.unpack("<I")
    variables = dict(_read_variable(r) for _ in range(count))
    (n_alias,) = r.unpack("<I")
    aliases = {}
    for _ in range(n_alias):
        alias = r.string()
        aliases[alias] = r.string()
    if r.pos != len(buf):
        raise CorruptWeightsError(f"{origin} has {len(buf) - r.pos} unexpected trailing bytes")
    if spec != "WhisperSpec":
        raise ModelNotAvailableError(f"{origin} holds a {spec}, not a Whisper model")
    return Ct2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)


class _Source:
    """Hands out source variables once each, as float32, and reports what was never taken."""

    def __init__(self, ct2: Ct2Model):
        self.ct2, self.taken = ct2, set[str]()

    def take(self, name: str) -> torch.Tensor:
        target = self.ct2.aliases.get(name, name)
        if target not in self.ct2.variables:
            raise CorruptWeightsError(
                f"CTranslate2 variable {name!r} is missing from model.bin",
                "the file is incomplete or not a Whisper spec; reinstall or re-convert it",
            )
        self.taken.add(name)
        tensor = self.ct2.variables[target]
        if tensor.dtype in (torch.int8, torch.int16) and tensor.dim() > 0:
            raise ModelNotAvailableError(
                f"CTranslate2 variable {name!r} is quantized ({tensor.dtype})",
                "convert the model with --quantization float16 or float32",
            )
        return tensor.to(torch.float32).clone()

    def setting(self, name: str) -> int:
        return int(self.take(name).item())

    def leftovers(self) -> list[str]:
        used = self.taken | {self.ct2.aliases.get(n, n) for n in self.taken}
        return sorted(n for n in self.ct2.variables if n not in used)


def ct2_dims(ct2: Ct2Model) -> WhisperDims:
    """Architecture sizes read from the variables' shapes and the head-count settings."""
    v = ct2.variables

    def count(prefix: str) -> int:
        return len({m[1] for n in v if (m := re.match(rf"{prefix}/layer_(\d+)/", n))})

    try:
        d_model = v["encoder/conv1/weight"].shape[0]
        return WhisperDims(
            n_mels=v["encoder/conv1/weight"].shape[1],
            n_vocab=v["decoder/embeddings/weight"].shape[0],
            n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
            n_audio_state=d_model,
            n_audio_head=int(v["encoder/num_heads"].item()),
            n_audio_layer=count("encoder"),
            n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
            n_text_state=v["decoder/embeddings/weight"].shape[1],
            n_text_head=int(v["decoder/num_heads"].item()),
            n_text_layer=count("decoder"),
            n_audio_ffn=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
            n_text_ffn=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        )
    except KeyError as exc:
        raise CorruptWeightsError(f"model.bin lacks {exc.args[0]!r}; not a Whisper spec") from exc


def _linear(src: _Source, ct2: str, hf: str, out: dict[str, torch.Tensor]) -> None:
    out[f"{hf}.weight"] = src.take(f"{ct2}/weight")
    out[f"{hf}.bias"] = src.take(f"{ct2}/bias")


def _norm(src: _Source, ct2: str, hf: str, out: dict[str, torch.Tensor]) -> None:
    out[f"{hf}.weight"] = src.take(f"{ct2}/gamma")
    out[f"{hf}.bias"] = src.take(f"{ct2}/beta")


def _split_fused(
    src: _Source, ct2: str, hf: str, names: Sequence[str], out: dict[str, torch.Tensor]
) -> None:
    """A fused [..k..; v] linear: split into ``names``; the k bias must be zero (dropped)."""
    weights = src.take(f"{ct2}/weight").chunk(len(names), dim=0)
    biases = src.take(f"{ct2}/bias").chunk(len(names), dim=0)
    for name, w, b in zip(names, weights, biases, strict=True):
        out[f"{hf}.{name}.weight"] = w.contiguous()
        if name == "k_proj":
            if torch.count_nonzero(b):
                raise CorruptWeightsError(f"{ct2}: the key bias is not zero; cannot drop it")
        else:
            out[f"{hf}.{name}.bias"] = b.contiguous()


def _layer(src: _Source, ct2: str, hf: str, cross: bool, out: dict[str, torch.Tensor]) -> None:
    sa = f"{ct2}/self_attention"
    _norm(src, f"{sa}/layer_norm", f"{hf}.self_attn_layer_norm", out)
    _split_fused(src, f"{sa}/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), out)
    _linear(src, f"{sa}/linear_1", f"{hf}.self_attn.out_proj", out)
    if cross:
        ca = f"{ct2}/attention"
        _norm(src, f"{ca}/layer_norm", f"{hf}.encoder_attn_layer_norm", out)
        _linear(src, f"{ca}/linear_0", f"{hf}.encoder_attn.q_proj", out)
        _split_fused(src, f"{ca}/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"), out)
        _linear(src, f"{ca}/linear_2", f"{hf}.encoder_attn.out_proj", out)
    _norm(src, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm", out)
    _linear(src, f"{ct2}/ffn/linear_0", f"{hf}.fc1", out)
    _linear(src, f"{ct2}/ffn/linear_1", f"{hf}.fc2", out)


def _check_settings(src: _Source, ct2: Ct2Model) -> None:
    for name, expected in _REQUIRED_SETTINGS.items():
        if name in ct2.variables and src.setting(name) != expected:
            raise ModelNotAvailableError(
                f"CTranslate2 setting {name}={src.setting(name)} differs from Whisper's "
                f"({expected}); this model.bin is not a standard Whisper"
            )
    for name in ("encoder/num_heads", "decoder/num_heads"):
        src.take(name)  # read by ct2_dims
    for name in _IGNORED_SETTINGS & ct2.variables.keys():
        src.take(name)


def ct2_state_dict(ct2: Ct2Model, dims: WhisperDims) -> dict[str, torch.Tensor]:
    """transformers ``WhisperForConditionalGeneration`` state dict (float32) from ``ct2``.

    Raises CorruptWeightsError if a needed variable is missing or any variable is unused.
    """
    src, out = _Source(ct2), dict[str, torch.Tensor]()
    _check_settings(src, ct2)
    for side, n_layers in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        hf = f"model.{side}"
        if side == "encoder":
            _linear(src, "encoder/conv1", f"{hf}.conv1", out)
            _linear(src, "encoder/conv2", f"{hf}.conv2", out)
        else:
            out[f"{hf}.embed_tokens.weight"] = src.take("decoder/embeddings/weight")
        out[f"{hf}.embed_positions.weight"] = src.take(f"{side}/position_encodings/encodings")
        for i in range(n_layers):
            _layer(src, f"{side}/layer_{i}", f"{hf}.layers.{i}", side == "decoder", out)
        _norm(src, f"{side}/layer_norm", f"{hf}.layer_norm", out)
    projection = src.take("decoder/projection/weight")
    if not torch.equal(projection, out["model.decoder.embed_tokens.weight"]):
        raise ModelNotAvailableError("the output projection is not tied to the token embedding")
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    _report_leftovers(src)
    return out


def _report_leftovers(src: _Source) -> None:
    leftovers = src.leftovers()
    settings = [n for n in leftovers if src.ct2.variables[n].dim() == 0]
    tensors = [n for n in leftovers if n not in settings]
    if settings:
        warnings.warn(f"CTranslate2 settings not interpreted: {settings}", stacklevel=3)
    if tensors:
        raise CorruptWeightsError(
            f"{len(tensors)} CTranslate2 weight(s) have no transformers counterpart: {tensors[:5]}",
            "this is not a standard Whisper layout; convert it with transformers instead",
        )
