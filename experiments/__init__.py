"""absl entry points. The only place that reads flags and wires concrete pieces."""
