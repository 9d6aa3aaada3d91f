"""Sparse autoencoder study (seed 003): Whisper encoder SAEs, measured features, steering."""
