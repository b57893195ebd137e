"""Comparison methods on the shared CogVideoX backbone and the shared trainer (docs/BASELINES.md)."""
