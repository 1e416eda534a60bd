"""GFT Studio benchmarks (issue 7): `python -m bench all`. See bench/README.md."""
