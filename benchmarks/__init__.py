"""The lab: benchmarks, races against the PyTorch and fastText peers, and measurement tools.

Not installed with the library; run from the checkout's root, as `python -m benchmarks.X`
(as the user's commands are `python -m experiments.X`). Nothing in bigjax imports this.
"""
