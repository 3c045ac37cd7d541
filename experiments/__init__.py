"""The user's absl entry points and their configs: with benchmarks/ (the lab), the only place
that reads flags and wires concrete pieces. Run from the checkout's root; not installed."""
