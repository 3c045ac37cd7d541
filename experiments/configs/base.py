"""What the shipped configs start from: the defaults (bigjax.config.schema, where every key is
declared with its meaning and valid range) and where the corpora are.

Every config file takes an optional argument after a colon:
`--config=experiments/configs/mlp_sst2.py:tiny` is the same recipe at toy sizes (a few
steps, small widths), for tests and for trying out a pipeline.
"""
import os

from bigjax.config.schema import get_config, merged, variant  # pylint: disable=unused-import

# ../shared/data beside the project root, wherever the command is run from.
SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'data'))
