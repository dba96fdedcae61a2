"""Serving benchmark: in-process floor, FastAPI wrapper, `driftloop serve` (± batch wait)."""
