"""Ahead-of-time compiles of the trainer's and the sampler's programs for TPU slices, on any host
(`configs/compile.py`)."""
