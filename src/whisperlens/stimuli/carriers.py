"""Carrier phrases and speaking rates: the levers that make synthetic words recognisable.

Whisper mishears about half of isolated synthetic words; the same words inside a short
carrier phrase, or spoken more slowly, fare much better. A :class:`Carrier` is a named
template with one ``{word}`` slot; :meth:`Carrier.render` returns the text together with
the character span of the target word, which :meth:`Stimulus.time_span
<whisperlens.stimuli.tts.Stimulus.time_span>` turns into a time span using the engine's
word timings.

A speaking rate is one engine-independent multiplier (1.0 = the engine's normal speed,
< 1 slower); :func:`engine_rate_params` maps it onto each engine's own knob.
"""

from __future__ import annotations

from dataclasses import dataclass

SLOT = "{word}"
ESPEAK_DEFAULT_WPM = 175  # espeak-ng's default speed, words per minute
ESPEAK_WPM_RANGE = (80, 450)  # what espeak-ng accepts
RATE_RANGE = (0.25, 4.0)
# Named speaking rates (multipliers of the engine's normal speed).
RATES: dict[str, float] = {"normal": 1.0, "slow": 0.85, "slower": 0.7}


@dataclass(frozen=True)
class CarrierText:
    """A rendered carrier phrase."""

    text: str  # the full text to synthesize
    word: str  # the target word
    word_span: tuple[int, int]  # character span [start, end) of ``word`` in ``text``
    carrier: str  # name of the carrier that produced it

    def __post_init__(self) -> None:
        start, end = self.word_span
        if self.text[start:end] != self.word:
            raise ValueError(f"word_span {self.word_span} does not hold {self.word!r}")


@dataclass(frozen=True)
class Carrier:
    """A named template with exactly one ``{word}`` slot."""

    name: str  # registry key, e.g. "the_word_is"
    template: str  # e.g. "The word is {word}."
    language: str  # language of the surrounding words, e.g. "en"

    def __post_init__(self) -> None:
        if self.template.count(SLOT) != 1:
            raise ValueError(f"carrier {self.name!r} needs exactly one {SLOT} slot")

    def render(self, word: str) -> CarrierText:
        """Insert ``word`` into the template; keep its character span."""
        word = word.strip()
        if not word or SLOT in word:
            raise ValueError(f"cannot use {word!r} as a carrier word")
        start = self.template.index(SLOT)
        text = self.template.replace(SLOT, word)
        return CarrierText(text, word, (start, start + len(word)), self.name)


_CARRIER_LIST = (
    Carrier("bare", "{word}", "any"),
    Carrier("bare_period", "{word}.", "any"),
    Carrier("the_word_is", "The word is {word}.", "en"),
    Carrier("say_again", "Say {word} again.", "en"),
    Carrier("i_said", "I said {word} clearly.", "en"),
    Carrier("es_la_palabra", "La palabra es {word}.", "es"),
    Carrier("es_diga", "Diga {word} otra vez.", "es"),
)
CARRIERS: dict[str, Carrier] = {c.name: c for c in _CARRIER_LIST}


def get_carrier(name: str) -> Carrier:
    """The carrier called ``name``; ValueError listing the known names otherwise."""
    try:
        return CARRIERS[name]
    except KeyError:
        known = ", ".join(CARRIERS)
        raise ValueError(f"unknown carrier {name!r}; known carriers: {known}") from None


# Carriers that say the same thing in different languages: a word whose language differs from
# the chosen carrier's gets the counterpart in its own language.
CARRIER_COUNTERPARTS: tuple[dict[str, str], ...] = (
    {"en": "the_word_is", "es": "es_la_palabra"},
    {"en": "say_again", "es": "es_diga"},
)


def resolve(carrier: str) -> Carrier:
    """A carrier by name, or an ad-hoc one from a template with one ``{word}`` slot."""
    if SLOT in carrier:
        return Carrier(carrier, carrier, "any")
    return get_carrier(carrier)


def carrier_for(name: str, language: str) -> Carrier:
    """Carrier ``name`` if it suits ``language``, else its counterpart in that language."""
    carrier = get_carrier(name)
    if carrier.language in ("any", language):
        return carrier
    for group in CARRIER_COUNTERPARTS:
        if group.get(carrier.language) == name and language in group:
            return CARRIERS[group[language]]
    options = ", ".join(g[carrier.language] for g in CARRIER_COUNTERPARTS if carrier.language in g)
    raise ValueError(
        f"carrier {name!r} is {carrier.language!r} and has no {language!r} counterpart; "
        f"use a carrier with one ({options}) or 'bare'"
    )


def carrier_split(carrier: Carrier, word: str) -> tuple[str, str]:
    """(forced prefix text, scored candidate text) for ``word`` in ``carrier``.

    "The word is {word}." -> ("The word is", "cat."); "Say {word} again." -> ("Say",
    "cat again."); "{word}" -> ("", "cat"). Scoring forces the prefix on the decoder and
    scores the rest (see :func:`whisperlens.scoring.candidate_logprobs`).
    """
    before, after = carrier.template.split(SLOT)
    return before.strip(), f"{word.strip()}{after}".strip()


def carrier_names(language: str | None = None) -> list[str]:
    """Carrier names, optionally only those usable for ``language`` (plus language-free)."""
    base = None if language is None else language.split("-")[0].lower()
    return [c.name for c in _CARRIER_LIST if base is None or c.language in ("any", base)]


def render(name: str, word: str) -> CarrierText:
    """Shortcut: ``get_carrier(name).render(word)``."""
    return get_carrier(name).render(word)


def parse_rate(rate: float | str) -> float:
    """A rate multiplier from a number or a name in :data:`RATES`, range-checked."""
    if isinstance(rate, str):
        value = RATES.get(rate)
        if value is None:
            try:
                value = float(rate)
            except ValueError:
                names = ", ".join(RATES)
                raise ValueError(f"rate {rate!r} is neither a number nor one of {names}") from None
    else:
        value = float(rate)
    lo, hi = RATE_RANGE
    if not lo <= value <= hi:
        raise ValueError(f"rate must be in [{lo}, {hi}] (1.0 = normal speed), got {value}")
    return value


def engine_rate_params(engine: str, rate: float) -> dict[str, float | int]:
    """Map a rate multiplier onto an engine's knob.

    piper: ``length_scale = 1 / rate``; espeak: ``wpm = round(175 * rate)``, which must
    stay inside espeak-ng's 80-450 words per minute.
    """
    if engine == "piper":
        return {"length_scale": 1.0 / rate}
    if engine == "espeak":
        wpm = round(ESPEAK_DEFAULT_WPM * rate)
        lo, hi = ESPEAK_WPM_RANGE
        if not lo <= wpm <= hi:
            raise ValueError(
                f"rate {rate} gives {wpm} words/min; espeak-ng accepts {lo}-{hi} "
                f"(rate {lo / ESPEAK_DEFAULT_WPM:.2f}-{hi / ESPEAK_DEFAULT_WPM:.2f})"
            )
        return {"wpm": wpm}
    raise ValueError(f"no rate mapping for engine {engine!r}")
