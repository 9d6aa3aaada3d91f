"""A short end-to-end demo on the offline models: transcribe, cache, patch, steer, report.

Every effect is graded (forced-choice log-probability of the source word against the
target word) and paired with a control, so the demo shows what the library measures
rather than a binary "did the word change". Every edit is an
:class:`~whisperlens.interventions.Intervention` whose payload lies in the run's
``payloads.safetensors``, so ``rows.jsonl`` names exactly what was done; the run is a
:class:`~whisperlens.runs.RunDir` (resumable) with a ``report.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from whisperlens.frames import n_audio_frames
from whisperlens.interventions import Intervention, Span, save_payloads
from whisperlens.runs import RunDir

STUDY = "demo"
FORMAT_VERSION = 1
PAYLOADS_FILE = "payloads.safetensors"


@dataclass(frozen=True)
class DemoConfig:
    model: str = "tiny.en"  # offline name, hub id or path
    engine: str = "piper"  # TTS engine for the stimuli
    sentence: str = "The quick brown fox jumps over the lazy dog."
    carrier: str = "The word is {word}."
    source_word: str = "bat"  # its activations are patched in ...
    target_word: str = "pat"  # ... while the model hears this one
    control_word: str = "cup"  # a third word: patching it in is the control
    strengths: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
    seed: int = 0  # random-direction control

    def __post_init__(self) -> None:
        if "{word}" not in self.carrier:
            raise ValueError("carrier must contain {word}")
        if len({self.source_word, self.target_word, self.control_word}) != 3:
            raise ValueError("source, target and control words must differ")


def default_out(config: DemoConfig) -> Path:
    """Where ``whisperlens demo`` writes without ``--out``: the user cache."""
    from whisperlens._io import cache_dir

    return cache_dir("runs") / f"demo-{Path(config.model).name}"


class _Demo:
    """The model, the stimuli and the payloads one demo run measures with."""

    def __init__(self, config: DemoConfig, run: RunDir):
        from whisperlens.hooks import HookedWhisper
        from whisperlens.stimuli.tts import synthesize

        self.config, self.run = config, run
        self.hooked = HookedWhisper.from_pretrained(config.model)
        self.sentence = synthesize(config.sentence, engine=config.engine)
        words = (config.source_word, config.target_word, config.control_word)
        self.clips = {
            w: synthesize(config.carrier.format(word=w), engine=config.engine) for w in words
        }
        self.n_frames = min(n_audio_frames(len(c.audio)) for c in self.clips.values())
        self.site_mid = f"encoder.blocks.{self.hooked.n_layers // 2}.hook_resid_post"
        if not run.file(PAYLOADS_FILE).exists():
            run.start()
            save_payloads(run.file(PAYLOADS_FILE), self._payloads())

    def _payloads(self) -> dict[str, torch.Tensor]:
        """Source and control activations per layer, the steering vector and its control."""
        c, span = self.config, slice(0, self.n_frames)
        out: dict[str, torch.Tensor] = {}
        for layer in range(self.hooked.n_layers):
            site = f"encoder.blocks.{layer}.hook_resid_post"
            for role, word in (("source", c.source_word), ("control", c.control_word)):
                out[f"{role}:{site}"] = self._acts(word, site, span)
        acts = {w: self._acts(w, self.site_mid, span) for w in (c.source_word, c.target_word)}
        vector = (acts[c.source_word] - acts[c.target_word]).mean(0)
        control = torch.randn(vector.shape, generator=torch.Generator().manual_seed(c.seed))
        out["steer:vector"] = vector
        out["steer:random"] = control * vector.norm() / control.norm()
        return out

    def _acts(self, word: str, site: str, frames: slice) -> torch.Tensor:
        """One site's activations [frame, d] on ``word``'s clip."""
        cache = self.hooked.run_with_cache(self.clips[word].audio, names=[site], frames=frames)
        return cache[site][0]

    def margin(self, interventions: list[Intervention]) -> float:
        """log p(source word) - log p(target word) on the target clip, both in the carrier."""
        from whisperlens.scoring import candidate_logprobs

        c = self.config
        cands = [c.carrier.format(word=w) for w in (c.source_word, c.target_word)]
        with self.hooked.apply(interventions, base_dir=self.run.path):
            lp = candidate_logprobs(self.hooked, self.clips[c.target_word].audio, cands)[0]
        return float(lp[0] - lp[1])


def plan(config: DemoConfig, n_layers: int, n_frames: int) -> list[tuple[str, list[Intervention]]]:
    """Every measurement as (row id, interventions): the clean run, patches, steers."""
    span = Span(0, n_frames)
    units: list[tuple[str, list[Intervention]]] = [("clean", [])]
    for layer in range(n_layers):
        site = f"encoder.blocks.{layer}.hook_resid_post"
        for role in ("source", "control"):
            payload = f"{PAYLOADS_FILE}#{role}:{site}"
            units.append((f"patch:{site}:{role}", [Intervention("patch", site, span, payload)]))
    site = f"encoder.blocks.{n_layers // 2}.hook_resid_post"
    for strength in config.strengths:
        for role in ("vector", "random"):
            iv = Intervention("steer", site, span, f"{PAYLOADS_FILE}#steer:{role}", strength)
            units.append((f"steer:{strength:g}:{role}", [iv]))
    return units


def run_demo(
    config: DemoConfig,
    out: str | Path | None = None,
    *,
    log: Callable[[str], Any] = print,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the demo into ``out`` (default :func:`default_out`); return ``summary.json``."""
    from whisperlens.decoding import transcribe

    out = Path(out) if out is not None else default_out(config)
    with RunDir.open(
        out, study=STUDY, config=asdict(config), format_version=FORMAT_VERSION,
        artifacts=[PAYLOADS_FILE], overwrite=overwrite,
    ) as run:  # fmt: skip
        demo = _Demo(config, run)
        log(f"model: {demo.hooked.loaded!r}")
        if "transcribe" not in run.done:
            text = transcribe(demo.hooked, demo.sentence.audio)[0].text.strip()
            run.append({"id": "transcribe", "transcript": text})
        log(f"transcribe  {config.sentence!r} -> {run.done['transcribe']['transcript']!r}")
        cache_summary = _cache_summary(demo)
        log(
            f"cache       {cache_summary['sites']} encoder sites x {cache_summary['frames']} "
            f"real-audio frames ({cache_summary['MiB']} MiB)"
        )
        for unit_id, interventions in plan(config, demo.hooked.n_layers, demo.n_frames):
            if unit_id not in run.done:
                ivs = [iv.to_dict() for iv in interventions]
                run.append(
                    {"id": unit_id, "interventions": ivs, "margin": demo.margin(interventions)}
                )
        summary = summarize(config, run, demo, cache_summary)
        _log_results(config, summary, demo.site_mid, log)
        run.write_summary(summary)
        write_report(run, summary, demo)
    return summary


def _cache_summary(demo: _Demo) -> dict[str, Any]:
    """Record every encoder residual site over the sentence's real-audio frames."""
    n_real = n_audio_frames(len(demo.sentence.audio))
    cache = demo.hooked.run_with_cache(demo.sentence.audio, frames=slice(0, n_real))
    return {"sites": len(cache), "frames": n_real, "MiB": round(cache.nbytes / 2**20, 2)}


def summarize(
    config: DemoConfig, run: RunDir, demo: _Demo, cache_summary: dict[str, Any]
) -> dict[str, Any]:
    """The transcript, the cache size, and margins per patched layer and steering strength."""
    m = {k: r.get("margin") for k, r in run.done.items()}
    clean = m["clean"]
    patching = [
        {"site": site, "clean": clean, "source": m[f"patch:{site}:source"],
         "control": m[f"patch:{site}:control"]}
        for site in (f"encoder.blocks.{i}.hook_resid_post" for i in range(demo.hooked.n_layers))
    ]  # fmt: skip
    steering = [
        {"strength": s, "vector": m[f"steer:{s:g}:vector"], "random": m[f"steer:{s:g}:random"]}
        for s in config.strengths
    ]
    return {
        "study": STUDY,
        "transcript": run.done["transcribe"]["transcript"],
        "cache_summary": cache_summary,
        "patching": patching,
        "steering": steering,
    }


def _log_results(config: DemoConfig, summary: dict, site: str, log: Callable[[str], Any]) -> None:
    src, tgt = config.source_word, config.target_word
    clean = summary["patching"][0]["clean"]
    log(f"patching    margin = log p({src}) - log p({tgt}) on the {tgt!r} clip; clean {clean:+.2f}")
    for row in summary["patching"]:
        log(
            f"  {row['site']:<36} patch {src!r}: {row['source']:+.2f}   "
            f"control {config.control_word!r}: {row['control']:+.2f}"
        )
    log(
        f"steering    {site}, vector = mean({src}) - mean({tgt}); "
        "control = random direction, same norm"
    )
    for row in summary["steering"]:
        log(
            f"  strength {row['strength']:>4}: margin {row['vector']:+.2f}   "
            f"random control {row['random']:+.2f}"
        )


def write_report(run: RunDir, summary: dict[str, Any], demo: _Demo) -> None:
    """Patching and steering figures with their controls, and the stimuli to listen to."""
    from whisperlens.report import Audio, Figure, Report, Section, Series, line_plot, render_report

    c = demo.config
    rows = summary["patching"]
    clean = rows[0]["clean"]
    patch_fig = line_plot(
        list(range(len(rows))),
        [Series(f"patch {c.source_word!r}", [r["source"] for r in rows]),
         Series(f"patch {c.control_word!r} (control)", [r["control"] for r in rows], kind="control")],
        title="Patching encoder block outputs (frames of the clip)",
        xlabel="encoder block", ylabel=f"log p({c.source_word}) - log p({c.target_word})",
        hline=clean,
    )  # fmt: skip
    steer = summary["steering"]
    steer_fig = line_plot(
        [r["strength"] for r in steer],
        [Series("steering vector", [r["vector"] for r in steer]),
         Series("random direction, same norm", [r["random"] for r in steer], kind="control")],
        title=f"Steering {demo.site_mid}", xlabel="strength",
        ylabel=f"log p({c.source_word}) - log p({c.target_word})", hline=clean,
    )  # fmt: skip
    clips = [Audio(c.sentence, demo.sentence.path, f"transcript: {summary['transcript']}")]
    clips += [Audio(c.carrier.format(word=w), clip.path) for w, clip in demo.clips.items()]
    intro = (
        f"Patching the {c.source_word!r} clip's encoder states into the {c.target_word!r} clip "
        f"moves the margin log p({c.source_word}) - log p({c.target_word}) from {clean:+.2f}; "
        f"patching the control word {c.control_word!r} shows what any foreign word does. "
        "The dotted line is the clean run."
    )
    section = Section("demo", "Demo: patching and steering with controls", intro, [
        Figure.from_matplotlib("Patching", patch_fig),
        Figure.from_matplotlib("Steering", steer_fig),
        *clips,
    ])  # fmt: skip
    render_report(Report("whisperlens demo", [section], {"model": c.model}), run.path)
