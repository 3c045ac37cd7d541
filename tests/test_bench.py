"""The benchmark: FLOP formulas against XLA's count, and the entry point end to end."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import measure
from bigjax.models import registry
from test_train import ROOT, write_corpus


def test_mlp_flops_match_xla_cost_analysis():
  model = registry.build_model('mlp', vocab_size=500, num_classes=3, embed_dim=64, hidden_dims=(512,), dropout=0.0)
  ids, lengths = jnp.ones((32, 20), jnp.int32), jnp.full((32,), 20)
  params = model.init(jax.random.PRNGKey(0), ids, lengths)
  xla = jax.jit(model.apply).lower(params, ids, lengths).compile().cost_analysis()['flops']
  ours = measure.model_flops('mlp', batch=32, width=20, real_tokens=640, embed_dim=64, hidden_dim=512, num_classes=3)
  # Ours counts matmuls only (x3 for forward + backward); XLA adds the mean and relu, which
  # a wide hidden layer makes small.
  assert ours['executed'] / 3 == pytest.approx(xla, rel=0.15)


def test_lstm_flops_scale_with_real_tokens():
  kwargs = dict(batch=8, width=32, embed_dim=16, hidden_dim=16, num_classes=2)
  full = measure.model_flops('lstm', real_tokens=8 * 32, **kwargs)
  half = measure.model_flops('lstm', real_tokens=8 * 16, **kwargs)
  assert full['executed'] == full['useful'] == half['executed']
  per_token = 3 * 2 * (16 + 16) * 4 * 16  # fwd+bwd of x@W_ih + h@W_hh, 4 gates
  assert full['useful'] - half['useful'] == 8 * 16 * per_token
  bi = measure.model_flops('lstm', real_tokens=256, bidirectional=True, num_layers=2, **kwargs)
  assert bi['useful'] > 2 * full['useful']


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_matmul_ceiling_is_plausible(dtype):
  flops = measure.matmul_ceiling(n=256, dtype=dtype, seconds=0.2)
  assert 1e8 < flops < 1e15


@pytest.mark.slow
def test_benchmark_entry_point(tmp_path):
  data = write_corpus(tmp_path / 'data')
  out = tmp_path / 'bench.json'
  done = subprocess.run(
      [sys.executable, '-m', 'benchmarks.benchmark', '--config=experiments/configs/lstm_sst2.py',
       f'--config.data.path={data}', '--config.data.vocab_size=120', '--config.data.max_len=16',
       '--config.model.embed_dim=16', '--config.model.lstm.hidden_dim=16', '--config.model.mlp.hidden_dim=16', '--config.train.batch_size=16',
       '--config.data.smallest_bucket=16', '--windows=2', '--window_steps=3', f'--json_out={out}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'train real tokens/s' in done.stdout
  r = json.loads(out.read_text())
  assert r['train']['tokens_per_s'] > r['train']['examples_per_s'] > 0
  assert r['compilation']['train_shapes'] == 1 and r['compilation']['train_compiles'] >= 1
  assert r['input_pipeline']['vs_train_step'] > 1
  assert 0 < r['flops']['useful_per_s'] <= r['flops']['executed_per_s']
  assert r['flops']['matmul_operand_dtype'] == 'bfloat16'  # lstm_sst2.py's: its own ceiling besides f32's.
  assert set(r['flops']['ceilings']) == {'float32', 'bfloat16'}
  assert 'fraction of bfloat16 ceiling executed / useful' in done.stdout
  assert np.isfinite(r['eval']['examples_per_s']) and r['memory']['peak_host_mib'] > 0


def test_language_model_flops_count_the_head_at_every_token():
  kwargs = dict(batch=4, width=10, embed_dim=8, hidden_dim=6)
  lm = measure.model_flops('lstm_lm', real_tokens=40, num_classes=1 + 16, **kwargs)
  classifier = measure.model_flops('lstm', real_tokens=40, num_classes=17, **kwargs)
  lstm_per_token = 3 * 2 * (8 + 6) * 4 * 6
  assert lm['useful'] == lm['executed'] == 40 * (lstm_per_token + 3 * (2 * 6 * 8 + 2 * 8 * 17))
  assert classifier['useful'] == 40 * lstm_per_token + 3 * 2 * 4 * 6 * 17  # One head per row, not per token.


# Slow tier: the benchmark tool end to end, as test_benchmark_entry_point; its FLOPs are checked above.
@pytest.mark.slow
def test_benchmark_entry_point_on_a_language_model(tmp_path):
  from test_language_model import write_reviews  # pylint: disable=import-outside-toplevel
  data = write_reviews(str(tmp_path / 'data'))
  out = tmp_path / 'bench.json'
  done = subprocess.run(
      [sys.executable, '-m', 'benchmarks.benchmark', '--config=experiments/configs/lm_imdb.py:tiny',
       f'--config.data.path={data}', '--config.lm.window=8', '--config.train.batch_size=4', '--windows=2',
       '--window_steps=3', f'--json_out={out}'], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert '(a language model)' in done.stdout
  r = json.loads(out.read_text())
  assert r['train']['tokens_per_s'] == pytest.approx(8 * r['train']['examples_per_s'], rel=1e-6)  # All real.
  assert r['compilation']['train_shapes'] == 1 and r['inference'] is None
  assert 0 < r['flops']['useful_per_s'] == r['flops']['executed_per_s']
  assert np.isfinite(r['eval']['examples_per_s'])
