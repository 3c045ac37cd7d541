"""Test setup: 8 fake CPU devices (before JAX is imported) and shared fixtures."""
import os
import pathlib
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
# Tests check behaviour, not speed: LLVM's optimization of the compiled CPU code is most of what a
# tiny program's compile costs, and saves little of what it runs (unless XLA_FLAGS chose a level).
if '--xla_backend_optimization_level' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_backend_optimization_level=0'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The cache of tokenized data and compiled steps (bigjax.data.cache): one fresh folder per
# test session, never the user's own. Entry points run as subprocesses inherit it, and so do
# pytest-xdist's workers (started with this process's environment), so one worker's compiled
# programs serve the other's; the cache's writes are atomic renames, safe between processes.
os.environ['BIGJAX_CACHE_DIR'] = os.environ.get('BIGJAX_TEST_CACHE_DIR') or tempfile.mkdtemp(prefix='bigjax-test-cache-')
os.environ['BIGJAX_TEST_CACHE_DIR'] = os.environ['BIGJAX_CACHE_DIR']

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# JAX's persistent cache of compiled programs in that folder, where the entry points' own
# (cache.compilation, experiments/cli.py) go: a program another test (or command) already
# compiled, the same HLO, is loaded instead of compiled again. Compiling is most of what a test
# of a tiny model costs, and many tests train the same tiny configurations.
jax.config.update('jax_compilation_cache_dir', os.path.join(os.environ['BIGJAX_CACHE_DIR'], 'jax'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data'


@pytest.fixture
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f'the shared corpora folder {SHARED_DATA} is absent (it sits beside the project root)')
  return SHARED_DATA


@pytest.fixture(scope='session')
def tiny_transformer_run(tmp_path_factory) -> tuple:
  """(its workdir, its data folder): a tiny Transformer trained on the corpus of
  test_train.write_corpus until it tells the classes apart, once per session for the
  post-training stages' tests (compress, export, serve)."""
  from bigjax import training  # pylint: disable=g-import-not-at-top  # JAX after XLA_FLAGS above.
  from test_train import TINY_TRANSFORMER, tiny_config, write_corpus  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp('tiny_transformer')
  data = str(write_corpus(base / 'data'))
  training.run_training(tiny_config(data, 'transformer', **TINY_TRANSFORMER), str(base / 'run'))
  return str(base / 'run'), data


@pytest.fixture(scope='session')
def tiny_transformer_artifact(tiny_transformer_run, tmp_path_factory) -> str:
  """The export artifact folder of tiny_transformer_run."""
  from bigjax import runs  # pylint: disable=g-import-not-at-top
  from bigjax.export import export  # pylint: disable=g-import-not-at-top
  out = str(tmp_path_factory.mktemp('tiny_transformer_artifact') / 'artifact')
  export.write_artifact(runs.load_run(tiny_transformer_run[0]), out)
  return out
