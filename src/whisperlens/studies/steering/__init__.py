"""Cross-modal steering study (seed 000): text-model CAA vectors added to Whisper's encoder.

``concepts`` (shipped data), ``vectors`` (CAA + layer choice), ``mapping`` (reducers and
layouts), ``textscore`` (transcript scores), ``whisper_geometry`` (concept directions inside
Whisper), ``study`` (config, task, run) and ``summary`` (statistics and report).
"""
