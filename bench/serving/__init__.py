"""Serving benchmark: in-process floor, FastAPI wrapper, `driftloop serve` (plain, tuned)."""
