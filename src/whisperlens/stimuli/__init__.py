"""Speech stimuli: offline TTS with timings, and carrier phrases.

>>> from whisperlens.stimuli import synthesize, render
>>> phrase = render("the_word_is", "cat")
>>> stim = synthesize(phrase.text, engine="espeak", language="en", rate=0.85)
>>> stim.time_span(phrase.word_span)  # seconds covered by "cat"
"""

from whisperlens.stimuli.carriers import (
    CARRIERS,
    RATES,
    Carrier,
    CarrierText,
    carrier_names,
    engine_rate_params,
    get_carrier,
    render,
)
from whisperlens.stimuli.tts import (
    ENGINES,
    Segment,
    Stimulus,
    StimulusError,
    SynthesisRequest,
    TTSEngine,
    synthesize,
    synthesize_request,
)

__all__ = [
    "CARRIERS",
    "ENGINES",
    "RATES",
    "Carrier",
    "CarrierText",
    "Segment",
    "Stimulus",
    "StimulusError",
    "SynthesisRequest",
    "TTSEngine",
    "carrier_names",
    "engine_rate_params",
    "get_carrier",
    "render",
    "synthesize",
    "synthesize_request",
]
