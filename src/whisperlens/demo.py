"""A short end-to-end demo on the offline models: transcribe, cache, patch, steer.

Every effect is graded (forced-choice log-probability of the source word against the
target word) and paired with a control, so the demo shows what the library measures
rather than a binary "did the word change".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from whisperlens.frames import n_audio_frames


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


@dataclass
class DemoResult:
    transcript: str
    cache_summary: dict
    patching: list[dict] = field(default_factory=list)
    steering: list[dict] = field(default_factory=list)


def run_demo(config: DemoConfig, log=print) -> DemoResult:
    from whisperlens.decoding import transcribe
    from whisperlens.hooks import HookedWhisper
    from whisperlens.stimuli.tts import synthesize

    hooked = HookedWhisper.from_pretrained(config.model)
    log(f"model: {hooked.loaded!r}")
    sentence = synthesize(config.sentence, engine=config.engine)
    text = transcribe(hooked, sentence.audio)[0].text
    log(f"transcribe  {config.sentence!r} -> {text.strip()!r}")

    n_real = n_audio_frames(len(sentence.audio))
    cache = hooked.run_with_cache(sentence.audio, frames=slice(0, n_real))
    summary = {"sites": len(cache), "frames": n_real, "MiB": round(cache.nbytes / 2**20, 2)}
    log(
        f"cache       {summary['sites']} encoder sites x {n_real} real-audio frames "
        f"({summary['MiB']} MiB)"
    )
    result = DemoResult(text.strip(), summary)
    clips = {
        w: synthesize(config.carrier.format(word=w), engine=config.engine).audio
        for w in (config.source_word, config.target_word, config.control_word)
    }
    result.patching = _patching(hooked, config, clips, log)
    result.steering = _steering(hooked, config, clips, log)
    return result


def _margin(hooked, audio, config: DemoConfig) -> float:
    """log p(source word) - log p(target word), both inside the carrier."""
    from whisperlens.scoring import candidate_logprobs

    cands = [config.carrier.format(word=w) for w in (config.source_word, config.target_word)]
    lp = candidate_logprobs(hooked, audio, cands)[0]
    return float(lp[0] - lp[1])


def _patching(hooked, config: DemoConfig, clips: dict, log) -> list[dict]:
    target = clips[config.target_word]
    n = min(n_audio_frames(len(a)) for a in clips.values())
    frames = slice(0, n)
    clean = _margin(hooked, target, config)
    log(
        f"patching    margin = log p({config.source_word}) - log p({config.target_word}) "
        f"on the {config.target_word!r} clip; clean {clean:+.2f}"
    )
    rows = []
    for layer in range(hooked.n_layers):
        site = f"encoder.blocks.{layer}.hook_resid_post"
        row = {"site": site, "clean": clean}
        for role in ("source", "control"):
            word = config.source_word if role == "source" else config.control_word
            acts = hooked.run_with_cache(clips[word], names=[site], frames=frames)[site]
            with hooked.patch(site, acts[0], frames=frames):
                row[role] = _margin(hooked, target, config)
        rows.append(row)
        log(
            f"  {site:<36} patch {config.source_word!r}: {row['source']:+.2f}   "
            f"control {config.control_word!r}: {row['control']:+.2f}"
        )
    return rows


def _steering(hooked, config: DemoConfig, clips: dict, log) -> list[dict]:
    layer = hooked.n_layers // 2
    site = f"encoder.blocks.{layer}.hook_resid_post"
    n = min(n_audio_frames(len(a)) for a in clips.values())
    acts = {
        w: hooked.run_with_cache(clips[w], names=[site], frames=slice(0, n))[site][0]
        for w in (config.source_word, config.target_word)
    }
    vector = (acts[config.source_word] - acts[config.target_word]).mean(0)
    gen = torch.Generator().manual_seed(config.seed)
    control = torch.randn(vector.shape, generator=gen)
    control = control * vector.norm() / control.norm()
    log(
        f"steering    {site}, vector = mean({config.source_word}) - mean({config.target_word}) "
        f"(norm {float(vector.norm()):.1f}); control = random direction, same norm"
    )
    rows = []
    for s in config.strengths:
        row = {"strength": s}
        for role, v in (("vector", vector), ("random", control)):
            with hooked.steer(site, v, strength=s, frames=slice(0, n)):
                row[role] = _margin(hooked, clips[config.target_word], config)
        rows.append(row)
        log(f"  strength {s:>4}: margin {row['vector']:+.2f}   random control {row['random']:+.2f}")
    return rows
