"""Evaluating a SAE against PCA and random-direction baselines, on held-out data only.

`evaluate_sae(store, sae, out)` writes a run directory (study "sae-evaluate") with two kinds
of measurement, each for the SAE and for its two baselines (fitted on the store's *train*
split, evaluated on its *heldout* split):

Frame metrics, on up to ``max_frames`` held-out frames (a seeded sample):

- ``fvu``: fraction of variance unexplained, sum_frames ||x - x_hat||^2 /
  sum_frames ||x - mean(x)||^2 (mean over the evaluated frames), with a 95 % bootstrap CI
  over clips (frames of one clip are resampled together);
- ``l0``: mean number of non-zero codes per frame;
- ``dead_fraction``: latents never active (code != 0) on any evaluated frame;
- ``dense_fraction``: latents active on more than ``dense_threshold`` (10 %) of them.

Spliced metrics, on up to ``n_items`` held-out speech clips with transcripts: each clip
runs alone in its 30 s window; its site activations on the frames that hold real audio are
replaced and the rest of the encoder runs on (the clean states are computed once per clip,
each variant continues with ``model.encode_from``). Variants: ``clean``, the three
reconstructions (``sae``, ``pca``, ``random``), ``zero`` (activations set to 0) and
``mean`` (set to the mean training activation). Per variant: greedy transcript WER and CER
against the reference (``whisperlens.decoding`` / ``whisperlens.metrics``) and the decoder
cross-entropy of the reference transcript, teacher-forced, in nats per token (its text
tokens and ``<|endoftext|>``; ``whisperlens.scoring.sequence_logprobs``).

``ce_loss_recovered = (CE_ablated - CE_spliced) / (CE_ablated - CE_clean)`` with the zero
ablation (SAELens's convention; 1 = as good as clean, 0 = as bad as zeroing the site), and
``ce_loss_recovered_mean`` with the mean ablation (a harder reference: the mean keeps the
activation's constant part). CIs are percentile bootstraps over clips.

Baseline sizes: PCA keeps ``pca_k`` components (default: the SAE's held-out L0 rounded,
i.e. k for a TopK SAE: the same number of active codes per frame); the random dictionary has
as many unit directions as the SAE has latents, keeps the SAE's k (its rounded L0) largest
projections per frame and one least-squares scale (`RandomDictionary`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whisperlens.errors import WhisperlensError
from whisperlens.runs import RunDir
from whisperlens.stats import bootstrap_ci
from whisperlens.studies.sae.dictionaries import (
    Dictionary,
    PCADictionary,
    RandomDictionary,
    SAEDictionary,
    load_sae,
)

STUDY = "sae-evaluate"
FORMAT_VERSION = 1  # rows: id, language, n_tokens, ref, then per variant hyp/nll/wer/cer counts
DICTIONARIES = ("sae", "pca", "random")
VARIANTS = ("clean", *DICTIONARIES, "zero", "mean")
DENSE_THRESHOLD = 0.1  # a latent active on more than this fraction of frames is dense


class EvaluateError(WhisperlensError, ValueError):
    """An evaluation that cannot run as asked."""


# -- frame metrics -----------------------------------------------------------------------
@torch.no_grad()
def frame_metrics(
    dictionary: Dictionary,
    acts: torch.Tensor,
    groups: np.ndarray | None = None,
    *,
    dense_threshold: float = DENSE_THRESHOLD,
    chunk: int = 8192,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """FVU, L0, dead and dense fractions of ``dictionary`` on ``acts`` [n, d] (see the
    module docstring); ``groups`` [n] (clip ids) makes the FVU CI resample clips."""
    x_all = acts.to(torch.float32)
    n = x_all.shape[0]
    if n == 0:
        raise EvaluateError("no frames to evaluate", "extract more held-out audio")
    mean = x_all.to(torch.float64).mean(0)
    err, var = np.zeros(n), np.zeros(n)
    active = torch.zeros(dictionary.n_latents, dtype=torch.float64)
    l0_sum = 0.0
    for i in range(0, n, chunk):
        x = x_all[i : i + chunk]
        z = dictionary.encode(x)
        x_hat = dictionary.decode(z)
        err[i : i + len(x)] = (x - x_hat).double().pow(2).sum(-1).numpy()
        var[i : i + len(x)] = (x.double() - mean).pow(2).sum(-1).numpy()
        nz = z != 0
        active += nz.sum(0).double()
        l0_sum += float(nz.sum())
    freq = (active / n).numpy()
    groups = np.arange(n) if groups is None else np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    per_group = np.stack([np.bincount(inverse, err), np.bincount(inverse, var)], axis=1)
    lo, hi = bootstrap_ci(per_group, _ratio_of_sums, n_resamples=n_bootstrap, seed=seed)
    return {
        "fvu": float(err.sum() / var.sum()),
        "fvu_ci95": [lo, hi],
        "mse": float(err.mean()),
        "l0": l0_sum / n,
        "dead_fraction": float((freq == 0).mean()),
        "dense_fraction": float((freq > dense_threshold).mean()),
        "n_dead": int((freq == 0).sum()),
        "n_dense": int((freq > dense_threshold).sum()),
        "n_latents": int(dictionary.n_latents),
        "n_frames": int(n),
        "latent_frequency": freq,
    }


def _ratio_of_sums(x: np.ndarray) -> np.ndarray:
    """[resamples, n, 2] -> sum(x[..., 0]) / sum(x[..., 1]) per resample."""
    return x[..., 0].sum(-1) / np.maximum(x[..., 1].sum(-1), 1e-300)


def ce_loss_recovered(ce_clean: float, ce_spliced: float, ce_ablated: float) -> float:
    """(CE_ablated - CE_spliced) / (CE_ablated - CE_clean); NaN when the ablation is free."""
    denom = ce_ablated - ce_clean
    return (ce_ablated - ce_spliced) / denom if denom != 0 else float("nan")


# -- held-out clips ----------------------------------------------------------------------
def heldout_speech_items(
    store: Any, n_items: int | None, seed: int = 0, *, english_only: bool = False
) -> list[Any]:
    """Held-out speech clips with a transcript (manifest order; a seeded subset of n_items);
    ``english_only`` keeps the English ones (for an English-only model such as tiny.en)."""
    from safetensors import safe_open

    heldout: set[int] = set()
    for shard in store.shards():
        with safe_open(str(shard), framework="pt") as f:
            split, item = f.get_tensor("split"), f.get_tensor("item")
            heldout.update(int(i) for i in torch.unique(item[split == 1]).tolist())
    dataset = store.dataset()
    items = [dataset[i] for i in sorted(heldout)
             if dataset[i].label == "speech" and (dataset[i].text or "").strip()
             and not (english_only and dataset[i].language != "en")
             and (dataset[i].duration_s or 0.0) <= 30.0]  # one window per clip  # fmt: skip
    if n_items is not None and len(items) > n_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(items), n_items, replace=False))
        items = [items[i] for i in keep]
    return items


def _layer_entry(site_name: str) -> int | None:
    """The encoder block whose input the site's activation is (for ``encode_from``), or None
    when the site is not a whole residual stream (then the variants run as hooks)."""
    from whisperlens.sites import _NAME_RE

    m = _NAME_RE.match(site_name)
    if m is None or m.group(1) != "encoder":
        return None
    layer, point = m.group(2), m.group(3)
    if point == "hook_embed":
        return 0
    if layer is not None and point == "hook_resid_post":
        return int(layer) + 1
    if layer is not None and point == "hook_resid_pre":
        return int(layer)
    return None


@dataclass(frozen=True)
class _PortableSAE:
    """A SAELens SAE as its config and weights (SAE modules hold lambdas: not picklable)."""

    cfg: dict[str, Any]
    weights: dict[str, torch.Tensor]

    @classmethod
    def of(cls, dictionary: SAEDictionary) -> _PortableSAE:
        state = {k: v.detach().clone() for k, v in dictionary.sae.state_dict().items()}
        return cls(dictionary.sae.cfg.to_dict(), state)

    def load(self) -> SAEDictionary:
        from sae_lens import SAE

        sae = SAE.from_dict(self.cfg)
        sae.load_state_dict(self.weights)
        return SAEDictionary(sae)


@dataclass(frozen=True)
class SpliceTask:
    """Executor task: a unit is one held-out clip; its row has every variant's scores."""

    model_name: str
    site: str
    dictionaries: Mapping[str, Any]  # name -> Dictionary
    mean: torch.Tensor  # [d] mean training activation (mean ablation)
    max_new_tokens: int | None = None
    model: Any = None  # a loaded HookedWhisper (inline runs); None: load model_name

    def setup(self) -> Any:
        if self.model is not None:
            return self.model
        from whisperlens.hooks import HookedWhisper

        return HookedWhisper.from_pretrained(self.model_name)

    def run(self, model: Any, item: Any) -> dict[str, Any]:
        return splice_row(model, item, self.site, self.dictionaries, self.mean,
                          self.max_new_tokens)  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for process workers: no model (each loads its own), SAEs as weights."""
        dicts = {name: _PortableSAE.of(d) if isinstance(d, SAEDictionary) else d
                 for name, d in self.dictionaries.items()}  # fmt: skip
        return {**self.__dict__, "model": None, "dictionaries": dicts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        dicts = {name: d.load() if isinstance(d, _PortableSAE) else d
                 for name, d in state["dictionaries"].items()}  # fmt: skip
        self.__dict__.update({**state, "dictionaries": dicts})


def _replacements(dictionaries: Mapping[str, Any], mean: torch.Tensor) -> dict[str, Any]:
    """Variant name -> rows [n, d] -> replaced rows (None: keep the clean rows)."""
    out: dict[str, Any] = {"clean": None}
    for name, dictionary in dictionaries.items():
        out[name] = dictionary.reconstruct
    out["zero"] = torch.zeros_like
    out["mean"] = lambda rows: mean.to(rows.dtype).expand_as(rows)
    return out


@torch.no_grad()
def variant_encodings(
    model: Any, audio: np.ndarray, site: str, replacements: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Encoder outputs [1, 1500, d] per variant: the site's rows on the clip's real-audio
    frames replaced by ``fn(rows)`` (``None``: unchanged). Residual sites run the encoder up
    to the site once and continue with ``encode_from``; other sites run hooked passes."""
    from whisperlens.frames import n_audio_frames

    n = n_audio_frames(len(audio))
    feats = model.features(audio)
    entry = _layer_entry(site)
    out: dict[str, torch.Tensor] = {}
    if entry is None:
        for name, fn in replacements.items():
            if fn is None:
                out[name] = model.encode(feats)
                continue
            edit = lambda rows, _site, fn=fn: _apply(fn, rows)  # noqa: E731
            with model.edit(site, edit, frames=slice(0, n)):
                out[name] = model.encode(feats)
        return out
    states = model.run_with_cache(feats, names=[site])[site]
    for name, fn in replacements.items():
        variant = states
        if fn is not None:
            variant = states.clone()
            variant[:, :n] = _apply(fn, states[:, :n])
        out[name] = model.encode_from(entry, variant)
    return out


def _apply(fn: Any, rows: torch.Tensor) -> torch.Tensor:
    shape, dtype = rows.shape, rows.dtype
    flat = rows.reshape(-1, shape[-1]).to(torch.float32)
    return fn(flat).reshape(shape).to(dtype)


@torch.no_grad()
def splice_row(
    model: Any,
    item: Any,
    site: str,
    dictionaries: Mapping[str, Any],
    mean: torch.Tensor,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """One clip's row: per variant the greedy transcript, its word and character errors and
    the summed negative log-prob of the reference tokens (teacher-forced)."""
    from whisperlens.decoding import DecodeOptions, TruncationWarning, decode, special_tokens
    from whisperlens.metrics import cer, wer
    from whisperlens.scoring import scoring_prefix, sequence_logprobs
    from whisperlens.tokens import text_ids

    st = special_tokens(model)
    language = (item.language or "en") if st.multilingual else None
    lang = item.language or "en"
    ref = item.text.strip()
    target = text_ids(model.processor.tokenizer, ref) + [st.eot]
    prefix = scoring_prefix(model, language)
    limit = max_new_tokens or 2 * len(target) + 10  # longer is wrong anyway: stop babbling
    options = DecodeOptions(language=language, max_new_tokens=limit)
    encodings = variant_encodings(model, item.load(), site, _replacements(dictionaries, mean))
    row: dict[str, Any] = {"id": item.id, "language": lang, "ref": ref, "n_tokens": len(target)}
    for name, enc in encodings.items():
        with warnings.catch_warnings():  # an ablated encoder may babble: flagged per row
            warnings.simplefilter("ignore", TruncationWarning)
            transcript = decode(model, enc, options)[0]
        hyp = transcript.text
        w, c = wer(ref, hyp, lang).counts, cer(ref, hyp, lang).counts
        nll = -float(sequence_logprobs(model, enc, prefix, [target])[0])
        row[name] = {"hyp": hyp, "nll": nll, "word_errors": w.n_errors, "n_words": w.n_ref,
                     "char_errors": c.n_errors, "n_chars": c.n_ref,
                     "truncated": transcript.truncated}  # fmt: skip
    return row


# -- summary -----------------------------------------------------------------------------
def spliced_summary(rows: Sequence[Mapping[str, Any]], n_bootstrap: int = 1000, seed: int = 0):
    """Per-variant WER, CER and CE (nats/token), and CE loss recovered per dictionary, with
    bootstrap CIs over clips (ratios of sums, recomputed on each resample)."""
    names = [v for v in VARIANTS if rows and v in rows[0]]
    cols = ["word_errors", "n_words", "char_errors", "n_chars", "nll"]
    # data[clip, variant, column]; tokens per clip in its own column
    data = np.array([[[r[v][c] for c in cols] for v in names] for r in rows], dtype=float)
    tokens = np.array([r["n_tokens"] for r in rows], dtype=float)
    full = np.concatenate([data.reshape(len(rows), -1), tokens[:, None]], axis=1)

    def stat(which: str, variant: int, ablate: int | None = None):
        def f(x: np.ndarray) -> np.ndarray:
            s = x.sum(-2)  # [..., columns]
            col = lambda v, c: s[..., v * len(cols) + c]  # noqa: E731
            if which == "wer":
                return col(variant, 0) / np.maximum(col(variant, 1), 1)
            if which == "cer":
                return col(variant, 2) / np.maximum(col(variant, 3), 1)
            ce = lambda v: col(v, 4) / s[..., -1]  # noqa: E731
            if which == "ce":
                return ce(variant)
            clean, abl = ce(names.index("clean")), ce(ablate)  # type: ignore[arg-type]
            with np.errstate(divide="ignore", invalid="ignore"):
                return (abl - ce(variant)) / (abl - clean)

        return f

    def value_ci(f: Any) -> tuple[float, list[float]]:
        value = float(f(full[None])[0])
        lo, hi = bootstrap_ci(full, f, n_resamples=n_bootstrap, seed=seed)
        return value, [lo, hi]

    out: dict[str, dict[str, Any]] = {}
    for v, name in enumerate(names):
        entry: dict[str, Any] = {}
        for metric in ("wer", "cer", "ce"):
            entry[metric], entry[f"{metric}_ci95"] = value_ci(stat(metric, v))
        entry["n_truncated"] = sum(bool(r[name].get("truncated")) for r in rows)
        out[name] = entry
    for name in DICTIONARIES:
        if name not in names:
            continue
        v = names.index(name)
        for suffix, abl in (("", "zero"), ("_mean", "mean")):
            val, ci = value_ci(stat("rec", v, names.index(abl)))
            out[name][f"ce_loss_recovered{suffix}"] = val
            out[name][f"ce_loss_recovered{suffix}_ci95"] = ci
    return out


def _dictionary_summary(frame: Mapping[str, Any], spliced: Mapping[str, Any], name: str,
                        k: int | None) -> dict[str, Any]:  # fmt: skip
    s, clean = spliced.get(name, {}), spliced.get("clean", {})
    out = {key: val for key, val in frame.items() if key != "latent_frequency"}
    out.update({
        "k": k,
        "ce_loss_recovered": s.get("ce_loss_recovered"),
        "ce_loss_recovered_ci95": s.get("ce_loss_recovered_ci95"),
        "ce_loss_recovered_mean": s.get("ce_loss_recovered_mean"),
        "ce_loss_recovered_mean_ci95": s.get("ce_loss_recovered_mean_ci95"),
        "wer_spliced": s.get("wer"), "wer_spliced_ci95": s.get("wer_ci95"),
        "cer_spliced": s.get("cer"), "cer_spliced_ci95": s.get("cer_ci95"),
        "ce_spliced": s.get("ce"), "ce_spliced_ci95": s.get("ce_ci95"),
        "wer_clean": clean.get("wer"), "cer_clean": clean.get("cer"), "ce_clean": clean.get("ce"),
    })  # fmt: skip
    return out


# -- the run -----------------------------------------------------------------------------
def _as_dictionary(sae: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(dictionary, config entry, input files) for a SAE directory or a Dictionary."""
    if isinstance(sae, str | os.PathLike):
        path = Path(sae)
        if (path / "sae" / "cfg.json").is_file() and not (path / "cfg.json").is_file():
            path = path / "sae"  # a `sae train` run directory
        files = [path / "cfg.json", path / "sae_weights.safetensors"]
        return load_sae(path), {"sae": str(path)}, {"sae": files}
    h = hashlib.sha256(sae.directions.detach().cpu().numpy().tobytes()).hexdigest()
    return sae, {"sae": f"in-memory {sae.name} dictionary sha256:{h[:16]}"}, {}


def _sae_k(dictionary: Any) -> int | None:
    """The SAE's TopK k (None for architectures without one)."""
    k = getattr(getattr(getattr(dictionary, "sae", None), "cfg", None), "k", None)
    return int(k) if isinstance(k, int | float) else None


def _baselines(store: Any, sae: Any, heldout_l0: float, pca_k: int | None, max_frames: int,
               seed: int) -> tuple[dict[str, Any], dict[str, int | None]]:  # fmt: skip
    acts, _ = store.load(split="train", max_frames=max_frames, seed=seed, labels=False)
    k_sae = max(1, round(heldout_l0))
    k = pca_k or min(k_sae, acts.shape[1])
    random_k = min(k_sae, sae.n_latents)
    return {
        "sae": sae,
        "pca": PCADictionary.fit(acts, k),
        "random": RandomDictionary.fit(acts, sae.n_latents, random_k, seed=seed),
    }, {"pca": k, "random": random_k, "sae": _sae_k(sae)}


def evaluate_sae(
    store: Any,
    sae_dir_or_dictionary: str | os.PathLike[str] | Dictionary,
    out: str | os.PathLike[str],
    *,
    model: Any = None,
    n_items: int | None = 32,
    max_frames: int | None = 100_000,
    pca_k: int | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    dense_threshold: float = DENSE_THRESHOLD,
    max_new_tokens: int | None = None,
    executor: Any = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate a SAE (a ``sae train`` directory, its ``sae/`` folder, or a `Dictionary`)
    on ``store``'s held-out split against PCA and random baselines; returns the summary.

    ``model`` is a loaded ``HookedWhisper`` of ``store.model`` (None: loaded here; worker
    processes load their own). ``n_items`` held-out speech clips are spliced (None: all);
    ``max_frames`` held-out frames give the frame metrics (None: all). Greedy transcripts
    stop after ``max_new_tokens`` tokens (None: twice the reference's tokens + 10 per clip,
    so an ablated encoder's babble costs little; ``n_truncated`` counts the cut ones).
    """
    from whisperlens.executors import InlineExecutor

    dictionary, sae_entry, sae_inputs = _as_dictionary(sae_dir_or_dictionary)
    if dictionary.d_model != int(store.d_model):
        raise EvaluateError(
            f"the SAE reads {dictionary.d_model}-d activations, the store holds "
            f"{store.d_model}-d ones ({store.site})",
            "pass a SAE trained on this store",
        )
    shards = [str(Path(s).relative_to(store.path)) for s in store.shards()]
    config = {**sae_entry, "store": str(store.path), "site": store.site, "model": store.model,
              "shards": shards, "split": "heldout", "n_items": n_items, "max_frames": max_frames,
              "pca_k": pca_k, "seed": seed, "n_bootstrap": n_bootstrap,
              "dense_threshold": dense_threshold, "max_new_tokens": max_new_tokens}  # fmt: skip
    with RunDir.open(
        out, study=STUDY, config=config, format_version=FORMAT_VERSION, key="id",
        inputs={**sae_inputs, "store_rows": Path(store.path) / "rows.jsonl"},
        overwrite=overwrite, artifacts=("latent_frequency.json",),
    ) as run:  # fmt: skip
        acts, meta = store.load(split="heldout", max_frames=max_frames, seed=seed)
        groups = meta.get("item")
        fm = {"sae": frame_metrics(dictionary, acts, groups, dense_threshold=dense_threshold,
                                   n_bootstrap=n_bootstrap, seed=seed)}  # fmt: skip
        dicts, ks = _baselines(store, dictionary, fm["sae"]["l0"], pca_k,
                              max_frames or 100_000, seed)  # fmt: skip
        for name in ("pca", "random"):
            fm[name] = frame_metrics(dicts[name], acts, groups, dense_threshold=dense_threshold,
                                     n_bootstrap=n_bootstrap, seed=seed)  # fmt: skip
        run.start()
        run.write_json("latent_frequency.json",
                       {n: fm[n]["latent_frequency"].tolist() for n in DICTIONARIES})  # fmt: skip
        if model is None:  # its vocabulary says which clips it can transcribe
            from whisperlens.hooks import HookedWhisper

            model = HookedWhisper.from_pretrained(store.model)
        english_only = not model.multilingual
        items = heldout_speech_items(store, n_items, seed, english_only=english_only)
        todo = run.pending(items, lambda it: it.id)
        if todo:
            task = SpliceTask(store.model, store.site, dicts, store.mean("train"), max_new_tokens,
                              model if executor is None else None)  # workers load their own  # fmt: skip
            with run.progress(len(items), "splice", progress) as bar:
                for _item, row in (executor or InlineExecutor()).map(task, todo):
                    run.append(row)
                    bar.update(1)
        rows = run.rows([it.id for it in items])
        spliced = spliced_summary(rows, n_bootstrap, seed) if rows else {}
        summary = _summary(store, fm, spliced, ks, len(rows), config)
        run.write_summary(summary)
    return summary


def _summary(
    store: Any,
    fm: Mapping[str, Any],
    spliced: Mapping[str, Any],
    ks: dict[str, int | None],
    n_clips: int,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """The SAE's metrics at the top level, then per dictionary ("sae", "pca", "random") and
    the clean / zero / mean variants under "ablations"."""
    per = {
        "sae": _dictionary_summary(fm["sae"], spliced, "sae", ks.get("sae")),
        "pca": _dictionary_summary(fm["pca"], spliced, "pca", ks["pca"]),
        "random": _dictionary_summary(fm["random"], spliced, "random", ks["random"]),
    }
    ablations = {name: spliced.get(name) for name in ("clean", "zero", "mean")}
    return {
        "study": STUDY,
        "site": store.site,
        "model": store.model,
        "sae_path": config["sae"],
        "n_heldout_frames": fm["sae"]["n_frames"],
        "n_clips": n_clips,
        "pca_k": ks["pca"],
        "random_k": ks["random"],
        "definitions": {
            "fvu": "sum ||x - x_hat||^2 / sum ||x - mean||^2 over held-out frames",
            "l0": "mean number of non-zero codes per frame",
            "dead_fraction": "latents never active on the evaluated held-out frames",
            "dense_fraction": f"latents active on > {config['dense_threshold']:.0%} of them",
            "ce": "teacher-forced reference NLL, nats per token (text + <|endoftext|>)",
            "ce_loss_recovered": "(CE_zero - CE_spliced) / (CE_zero - CE_clean)",
            "ce_loss_recovered_mean": "(CE_mean - CE_spliced) / (CE_mean - CE_clean)",
        },
        **{key: per["sae"][key] for key in per["sae"]},
        **per,
        "ablations": ablations,
    }
