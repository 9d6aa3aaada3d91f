"""Studies: each is a config dataclass, a list of independent work units and a report section.

Every study writes one run directory (:mod:`whisperlens.runs`), scores clips through the
scoring seam (:mod:`whisperlens.scoring`, :mod:`whisperlens.decoding`), describes what it
does to the model as data (:mod:`whisperlens.interventions`), renders with
:mod:`whisperlens.report` and runs its units through :mod:`whisperlens.executors`.

- ``baseline``: how well Whisper hears the synthetic stimuli (greedy and forced choice)
- ``evaluate``: word error rate on an audio dataset
- ``demo``: a short tour on the offline models
- ``patching``: activation patching (seed 001), experiments A and B in five modes
- ``steering``: cross-modal steering (seed 000), text-model concept vectors in Whisper
"""
