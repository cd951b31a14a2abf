"""Training and evaluation data: synthetic speech generation (synth)."""
