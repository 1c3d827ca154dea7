"""Benchmarks of rnn-tuner: scripts that print ratios measured side by side, not tests.

Run them all with `python -m benchmarks` (or `make bench`); see docs/performance.md.
"""
