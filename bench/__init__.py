"""Benchmarks. Run from the repository root, e.g. `.venv/bin/python -m bench.sms_inbound` (see bench/README.md)."""
