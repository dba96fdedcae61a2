"""Inference servers a user would pick instead of driftloop, benchmarked side by side."""
