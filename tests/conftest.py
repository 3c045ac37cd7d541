"""Test setup: 8 fake CPU devices (before JAX is imported) and shared fixtures."""
import os
import pathlib
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The cache of tokenized data and compiled steps (bigjax.data.cache): one fresh folder per
# test session (entry points run as subprocesses inherit it), never the user's own.
os.environ['BIGJAX_CACHE_DIR'] = tempfile.mkdtemp(prefix='bigjax-test-cache-')

import pytest  # pylint: disable=g-import-not-at-top

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data'


@pytest.fixture
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f'the shared corpora folder {SHARED_DATA} is absent (it sits beside the project root)')
  return SHARED_DATA
