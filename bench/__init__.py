"""driftloop benchmarks: `python -m bench` (or `make bench`) writes bench/RESULTS.md."""
