"""Cross-modal steering study (seed 000): text-model CAA vectors added to Whisper's encoder.

``concepts`` (shipped data), ``vectors`` (CAA + layer choice), ``mapping`` (reducers and
layouts), ``alignment`` (the learned text -> Whisper map of the ``aligned`` reducer),
``textscore`` (transcript scores), ``whisper_geometry`` (concept and language directions
inside Whisper), ``study`` (config, task, run) and ``summary`` (statistics and report).
"""
