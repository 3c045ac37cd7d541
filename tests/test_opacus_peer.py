"""The Opacus peer of bigjax's DP step (benchmarks/opacus_peer.py, benchmarks.dp_speed): the same model,
the same clipped gradient sum, and the race at a toy size."""
import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='torch is not installed here (pip install -e ".[peers]")')
pytest.importorskip('opacus', reason='opacus is not installed here')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import opacus_peer  # pylint: disable=g-import-not-at-top,wrong-import-position
from bigjax.models import mlp  # pylint: disable=g-import-not-at-top,wrong-import-position
from bigjax.models import registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from bigjax.privacy import clipping  # pylint: disable=g-import-not-at-top,wrong-import-position
from bigjax.tasks.classification import Classification  # pylint: disable=g-import-not-at-top,wrong-import-position
from bigjax.types import Batch  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.configs import minilm_sst2  # pylint: disable=g-import-not-at-top,wrong-import-position

VOCAB, EMBED, HIDDEN, BUCKETS = 40, 6, 5, 16


def _copy_weights(params, model) -> None:
  """bigjax's parameters into the peer's modules (a Linear's weight is a Dense kernel transposed)."""
  p = jax.device_get(params)
  with torch.no_grad():
    model.embedding.weight.copy_(torch.from_numpy(np.array(p['embedding']['embedding'])))
    model.bigram_embedding.weight.copy_(torch.from_numpy(np.array(p['bigram_embedding']['embedding'])))
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    for linear, name in zip(linears, ['hidden_0', 'head']):
      linear.weight.copy_(torch.from_numpy(np.asarray(p[name]['kernel']).T.copy()))
      linear.bias.copy_(torch.from_numpy(np.array(p[name]['bias'])))


def test_the_opacus_peer_is_bigjax_s_model_and_clips_as_bigjax_does():
  """Given bigjax's weights (dropout off), the peer's logits are bigjax's, bigrams included, and
  Opacus's clipped sum (ghost clipping, no noise) over the expected batch is bigjax's DP gradient."""
  section = {'name': 'mlp', 'embed_dim': EMBED, 'dropout': 0.0,
             'mlp': {'hidden_dim': HIDDEN, 'num_layers': 1, 'word_dropout': 0.0, 'bigram_buckets': BUCKETS,
                     'embed_init_std': 1.0, 'activation': 'relu'}}
  fns = registry.model_fns(registry.from_section(section, vocab_size=VOCAB, num_classes=2))
  rng = np.random.default_rng(0)
  ids = rng.integers(1, VOCAB, (6, 9)).astype(np.int32)
  ids[:, :3] = 7  # Repeated rows of the tables within an example: the ghost norms must add them up.
  lengths = np.array([9, 9, 5, 2, 1, 7], np.int32)
  ids[np.arange(9)[None] >= lengths[:, None]] = 0
  labels = rng.integers(0, 2, 6).astype(np.int32)
  params = fns.init(jax.random.PRNGKey(0), ids, lengths)
  model = opacus_peer.MLPClassifier(VOCAB, 2, EMBED, HIDDEN, 1, 0.0, 0.0, BUCKETS, 1.0)
  _copy_weights(params, model)
  assert sum(p.numel() for p in model.parameters()) == sum(x.size for x in jax.tree.leaves(params))
  big_ids = rng.integers(0, 30522, (3, 50)).astype(np.int32)  # The hash's int64 arithmetic at a real vocabulary.
  for x in (ids, big_ids):
    np.testing.assert_array_equal(opacus_peer.bigram_ids(torch.from_numpy(x.astype(np.int64)), 131072).numpy(),
                                  np.asarray(mlp.bigram_ids(x, 131072)))
  ids_t, lengths_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(lengths.astype(np.int64))
  model.eval()
  with torch.no_grad():
    theirs = model(ids_t, lengths_t).numpy()
  np.testing.assert_allclose(theirs, np.asarray(jax.jit(fns.logits)(params, ids, lengths)), rtol=1e-5, atol=1e-6)

  # Half the examples clipped: the clip norm is their median gradient norm.
  batch = Batch(token_ids=ids, lengths=lengths, labels=labels, weights=np.ones(6, np.float32))
  no_clip = clipping.PrivateGradients(Classification(2), fns, 1e9, 0.0, 6.0)
  keys = jax.random.split(jax.random.PRNGKey(1), 6)
  squared = jax.jit(lambda p, b, k: no_clip.per_example(p, b, k)[0])(params, batch, keys)
  clip = float(np.median(np.sqrt(np.asarray(squared))))
  summed, _ = jax.jit(clipping.PrivateGradients(Classification(2), fns, clip, 0.0, 6.0).clipped_sum)(
      params, batch, jax.random.PRNGKey(1))
  ours = jax.device_get(jax.tree.map(lambda g: g / 6.0, summed))
  model.train()  # No dropout in this model: train mode only lets Opacus's hooks run (and make_private wants it).
  _, private_model, optimizer, criterion, _ = opacus_peer.make_private(
      model, lr=1e-3, clip_norm=clip, noise_multiplier=0.0, batch_size=6, train_examples=60, width=9,
      vocab_size=VOCAB, num_classes=2, grad_sample_mode='ghost', seed=0)
  optimizer.zero_grad(set_to_none=True)
  with warnings.catch_warnings():  # Ghost clipping's backward hooks fire on outputs only, as Opacus intends.
    warnings.filterwarnings('ignore', message='Full backward hook is firing')
    criterion(private_model(ids_t, lengths_t), torch.from_numpy(labels.astype(np.int64))).backward()
  optimizer.pre_step()  # Clipped sum + noise (none) over the expected batch (6): what step() applies.
  theirs = {'embedding': model.embedding.weight.grad.numpy(),
            'bigram_embedding': model.bigram_embedding.weight.grad.numpy(),
            'hidden_0': model.mlp[1].weight.grad.numpy().T, 'head': model.mlp[4].weight.grad.numpy().T}
  for name, grad in theirs.items():
    want = ours[name]['embedding'] if 'embedding' in name else ours[name]['kernel']
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(model.mlp[4].bias.grad.numpy(), ours['head']['bias'], rtol=1e-4, atol=1e-6)


def test_the_peer_reports_a_poisson_sampled_private_step(tmp_path):
  out = tmp_path / 'peer.json'
  report = opacus_peer.main(['--vocab_size=50', '--embed_dim=8', '--hidden_dim=8', '--bigram_buckets=16',
                             '--word_dropout=0.3', '--batch_size=8', '--width=12', '--train_examples=80',
                             '--steps=2', '--warmup_steps=1', '--threads=1', f'--json_out={out}'])
  assert json.loads(out.read_text()) == report
  assert report['grad_sample_mode'] == 'ghost' and report['module'] == 'GradSampleModuleFastGradientClipping'
  assert report['sample_rate'] == pytest.approx(0.1) and report['expected_batch'] == 8
  assert report['accountant_steps'] == 3 and report['examples_per_s'] > 0
  assert report['parameters'] == 50 * 8 + 16 * 8 + 8 * 8 + 8 + 8 * 2 + 2


@pytest.mark.slow
def test_the_dp_race_at_a_toy_size(tmp_path):
  # Through the entry-point helper: benchmarks.dp_speed defines flags that other benchmarks imported
  # by other tests (transformer_speed) define too.
  from entry_points import run_module  # pylint: disable=g-import-not-at-top
  done = run_module('benchmarks.dp_speed', ['--shape=imdb', '--tiny', '--vocab_size=200', '--batch_size=8',
                                            '--train_examples=100', '--rounds=1', '--steps=2', '--warmup_steps=1',
                                            '--threads=1', f'--json_out={tmp_path / "dp.json"}',
                                            f'--markdown_out={tmp_path / "dp.md"}'])
  assert done.returncode == 0, done.stderr
  saved = json.loads((tmp_path / 'dp.json').read_text())
  assert set(saved['runs']) == {'bigjax_nonprivate', 'bigjax_dp', 'bigjax_shipped', 'opacus'}
  assert saved['same_work']['examples_per_step'] == 8
  assert saved['runs']['bigjax_dp'][0]['rows_per_step'] > 8  # Filler rows for the Poisson batch.
  assert saved['configuration']['bigjax_ghost_tables'] and saved['ratios']['dp_vs_opacus'] > 0
  assert 'bigjax_dp / opacus' in (tmp_path / 'dp.md').read_text()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(minilm_sst2.MINILM), reason=f'{minilm_sst2.MINILM} is absent (../shared/models)')
def test_the_dp_race_on_the_minilm_has_no_peer_and_honours_frozen_groups(tmp_path):
  from entry_points import run_module  # pylint: disable=g-import-not-at-top
  groups = '^(embedding|embedding_norm)/|^(position|type)_embedding$|^layers_(0|1|2|3|4)/=freeze'
  done = run_module('benchmarks.dp_speed', ['--shape=dp_minilm', '--tiny', '--batch_size=8', '--train_examples=100',
                                            f'--param_groups={groups}', '--rounds=1', '--steps=1',
                                            '--warmup_steps=0', f'--json_out={tmp_path / "dp.json"}',
                                            f'--markdown_out={tmp_path / "dp.md"}'])
  assert done.returncode == 0, done.stderr
  saved = json.loads((tmp_path / 'dp.json').read_text())
  assert set(saved['runs']) == {'bigjax_nonprivate', 'bigjax_dp'} and set(saved['ratios']) == {'dp_step_cost'}
  assert saved['configuration']['param_groups'] == groups and saved['configuration']['model']['name'] == 'transformer'
  assert 'against Opacus' not in (tmp_path / 'dp.md').read_text()
