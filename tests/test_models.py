"""Model behaviour: padding invariance, gradients, embeddings entry point, learning."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from bigjax.models import registry
from bigjax.tasks.classification import Classification
from bigjax.train import step as step_lib
from bigjax.types import Batch

VOCAB, CLASSES = 40, 3
TASK = Classification(CLASSES)
MODELS = {
    'mlp': dict(name='mlp', hidden_dims=(16, 12)),
    'mlp_bigrams': dict(name='mlp', hidden_dims=(16,), bigram_buckets=23),
    'lstm': dict(name='lstm', hidden_dim=12),
    'bilstm2': dict(name='lstm', hidden_dim=8, num_layers=2, bidirectional=True),
}
# bf16 matmuls: not in MODELS, whose finite-difference test needs f64 throughout. The
# stacked bidirectional one is checked against its f32 twin only (test_bf16_lstm_tracks...).
BF16_MODELS = {
    'lstm_bf16': dict(name='lstm', hidden_dim=12, dtype=jnp.bfloat16),
    'bilstm2_bf16': dict(name='lstm', hidden_dim=8, num_layers=2, bidirectional=True, dtype=jnp.bfloat16),
}

# The stacked bi-LSTM repeats the single LSTM's checks at 4x the cost: the slow tier.
_slow = lambda kinds: [pytest.param(k, marks=pytest.mark.slow) if k.startswith('bilstm2') else k for k in kinds]
KINDS = _slow(sorted(MODELS))


def make(kind, dropout=0.0, **extra):
  kwargs = dict({**MODELS, **BF16_MODELS}[kind], **extra)
  return registry.build_model(kwargs.pop('name'), vocab_size=VOCAB, num_classes=CLASSES, embed_dim=10,
                              dropout=dropout, **kwargs)


def tokens(seed=0, batch=5, width=9):
  rng = np.random.default_rng(seed)
  lengths = np.array([1, 9, 4, 6, 2][:batch], np.int32)
  ids = rng.integers(1, VOCAB, (batch, width)).astype(np.int32)
  ids[np.arange(width)[None] >= lengths[:, None]] = 0
  return jnp.asarray(ids), jnp.asarray(lengths)


@pytest.mark.parametrize('kind', KINDS + ['lstm_bf16'])
def test_padding_does_not_change_logits(kind):
  model = make(kind)
  ids, lengths = tokens()
  params = model.init(jax.random.PRNGKey(0), ids, lengths)
  reference = model.apply(params, ids, lengths)
  # Wider padding, and junk token ids beyond each row's length, must both be invisible.
  wider = jnp.pad(ids, ((0, 0), (0, 7)))
  junk = jnp.where(jnp.arange(16)[None] >= lengths[:, None], 7, wider)
  np.testing.assert_allclose(model.apply(params, wider, lengths), reference, atol=1e-6)
  np.testing.assert_allclose(model.apply(params, junk, lengths), reference, atol=1e-6)
  # Each row alone (its own width) gives the same logits as in the batch.
  for row in range(len(lengths)):
    n = int(lengths[row])
    alone = model.apply(params, ids[row:row + 1, :n], lengths[row:row + 1])
    np.testing.assert_allclose(alone[0], reference[row], atol=1e-5)


@pytest.mark.parametrize('kind', KINDS + ['lstm_bf16'])
def test_padded_embeddings_get_no_gradient(kind):
  model = make(kind)
  ids, lengths = tokens()
  params = model.init(jax.random.PRNGKey(1), ids, lengths)
  embeddings = model.apply(params, ids, method='embed')
  grad = jax.grad(lambda e: model.apply(params, e, lengths, method='logits_from_embeddings').sum())(embeddings)
  position, lengths_ = np.arange(ids.shape[1])[None], np.asarray(lengths)[:, None]
  padded = position >= lengths_
  if embeddings.shape[1] == 2 * ids.shape[1]:  # Bigram slots follow: pair (t, t+1) is real when t + 1 < length.
    padded = np.concatenate([padded, position >= lengths_ - 1], axis=1)
  assert np.abs(np.asarray(grad)[padded]).max() == 0.0
  assert np.abs(np.asarray(grad)[~padded]).max() > 0.0
  np.testing.assert_allclose(model.apply(params, embeddings, lengths, method='logits_from_embeddings'),
                             model.apply(params, ids, lengths), atol=1e-6)


@pytest.mark.parametrize('kind', KINDS)
def test_gradients_match_finite_differences(kind):
  ids, lengths = tokens(batch=3, width=6)
  lengths = jnp.minimum(lengths, 6)
  batch = Batch(ids, lengths, jnp.array([0, 2, 1]), jnp.array([1.0, 1.0, 0.0]))
  with jax.enable_x64():
    fns = registry.model_fns(make(kind, param_dtype=jnp.float64))
    params = fns.init(jax.random.PRNGKey(2), ids, lengths)
    loss = lambda p: TASK.loss(fns, p, batch, None)[0]
    check_grads(loss, (params,), order=1, modes=['rev'], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('kind', KINDS + ['lstm_bf16'])
def test_tiny_batch_is_overfit(kind):
  fns = registry.model_fns(make(kind, dropout=0.0))
  ids, lengths = tokens(seed=3, batch=5)
  batch = Batch(ids, lengths, jnp.array([0, 1, 2, 1, 0]), jnp.ones(5))
  tx = optax.adam(3e-2)
  state = step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batch)
  train = jax.jit(functools.partial(step_lib.train_step, loss_fn=functools.partial(TASK.loss, fns),
                                    count_fn=TASK.count, tx=tx))
  for _ in range(60):
    state, sums = train(state, batch)
  assert float(sums['loss'] / sums['examples']) < 0.05
  assert float(sums['correct']) == 5.0


def test_bf16_matmul_takes_bf16_operands_and_sums_in_f32_both_ways():
  """Forward and backward: the f32 dots of the bf16-rounded operands (cotangent included)."""
  from bigjax.models.lstm import _bf16_copies, _bf16_matmul
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x, kernel, cotangent = (jax.random.normal(k, s) for k, s in zip(keys, [(6, 40), (40, 24), (6, 24)]))
  rounded = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
  dot = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)
  y, vjp = jax.vjp(lambda x, kernel: _bf16_matmul(x, kernel, *_bf16_copies(kernel)), x, kernel)
  d_x, d_kernel = vjp(cotangent)
  assert y.dtype == d_x.dtype == d_kernel.dtype == jnp.float32
  np.testing.assert_allclose(y, dot(rounded(x), rounded(kernel)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d_x, dot(rounded(cotangent), rounded(kernel).T), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d_kernel, dot(rounded(x).T, rounded(cotangent)), rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(y - dot(x, kernel))).max() > 1e-3  # Rounded indeed: not the f32 product.


@pytest.mark.slow
def test_bf16_lstm_tracks_the_f32_lstm():
  """Same parameters, bf16 matmuls: logits and every gradient within bf16's rounding of f32.

  The stacked bi-LSTM: both directions, and a second layer fed by the first one's states."""
  kind = 'bilstm2'
  ids, lengths = tokens()
  batch = Batch(ids, lengths, jnp.array([0, 2, 1, 1, 0]), jnp.ones(5))
  fns32, fns16 = registry.model_fns(make(kind)), registry.model_fns(make(f'{kind}_bf16'))
  params = fns32.init(jax.random.PRNGKey(3), ids, lengths)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, fns16.init(jax.random.PRNGKey(3), ids, lengths))
  np.testing.assert_allclose(fns16.logits(params, ids, lengths), fns32.logits(params, ids, lengths),
                             rtol=2e-2, atol=2e-2)
  grads = [jax.grad(lambda p, f=fns: TASK.loss(f, p, batch, None)[0])(params)
           for fns in (fns32, fns16)]
  for path, g32, g16 in zip(jax.tree_util.tree_leaves_with_path(grads[0]), jax.tree.leaves(grads[0]),
                            jax.tree.leaves(grads[1])):
    assert g16.dtype == jnp.float32
    error = float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32))
    assert error < 2e-2, (jax.tree_util.keystr(path[0]), error)


def test_dropout_is_active_only_with_a_key():
  fns = registry.model_fns(make('lstm', dropout=0.5))
  ids, lengths = tokens()
  params = fns.init(jax.random.PRNGKey(0), ids, lengths)
  a, b = fns.logits(params, ids, lengths), fns.logits(params, ids, lengths)
  np.testing.assert_array_equal(a, b)
  c = fns.logits(params, ids, lengths, jax.random.PRNGKey(5))
  assert np.abs(np.asarray(a - c)).max() > 1e-4


@pytest.mark.parametrize('reverse', [False, True])
def test_lstm_layer_equals_flax_lstm_cell(reverse):
  """The cuDNN-layout layer computes what flax's OptimizedLSTMCell under nn.RNN computes."""
  from flax import linen as nn
  from bigjax.models.lstm import LSTMLayer
  ids, lengths = tokens()
  x = jax.random.normal(jax.random.PRNGKey(0), ids.shape + (6,))
  layer = LSTMLayer(5, reverse=reverse)
  params = layer.init(jax.random.PRNGKey(1), x, lengths)['params']
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  (_, final), states = layer.apply({"params": params}, x, lengths)

  reference = nn.RNN(nn.OptimizedLSTMCell(5), return_carry=True, reverse=reverse, keep_order=True)
  split = lambda w: dict(zip('ifgo', jnp.split(w, 4, axis=-1)))
  kernel_i, kernel_h, bias = split(params['kernel_i']), split(params['kernel_h']), split(params['bias'])
  flax_params = {f'i{g}': {'kernel': kernel_i[g]} for g in 'ifgo'}
  flax_params.update({f'h{g}': {'kernel': kernel_h[g], 'bias': bias[g]} for g in 'ifgo'})
  (_, flax_final), flax_states = reference.apply({'params': {'cell': flax_params}}, x, seq_lengths=lengths)
  np.testing.assert_allclose(final, flax_final, atol=1e-5)
  real = np.arange(ids.shape[1])[None] < np.asarray(lengths)[:, None]
  np.testing.assert_allclose(np.asarray(states)[real], np.asarray(flax_states)[real], atol=1e-5)


def test_forget_bias_starts_the_forget_gate_open():
  from bigjax.models.lstm import LSTMLayer
  ids, lengths = tokens()
  x = jnp.zeros(ids.shape + (4,))
  bias = LSTMLayer(3, forget_bias=1.0).init(jax.random.PRNGKey(0), x, lengths)['params']['bias']
  np.testing.assert_array_equal(bias, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])


def test_mlp_tables_start_at_the_configured_scale():
  for std in (1.0, 0.1):
    model = registry.build_model('mlp', vocab_size=500, num_classes=2, embed_dim=64, bigram_buckets=300,
                                 embed_init_std=std)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((2, 5), jnp.int32), jnp.array([5, 3]))['params']
    for table in ('embedding', 'bigram_embedding'):
      assert np.std(np.asarray(params[table]['embedding'])) == pytest.approx(std, rel=0.05)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_weight_drop_runs_the_recurrence_on_one_masked_recurrent_kernel(dtype):
  """Training output = the eval-mode layer whose kernel_h is masked once (shared by every row and
  time step) and rescaled; the mask is read back from where kernel_h's gradient is exactly zero."""
  from bigjax.models.lstm import LSTMLayer
  ids, lengths = tokens()
  x = jax.random.normal(jax.random.PRNGKey(0), ids.shape + (6,))
  rate = 0.3
  layer = LSTMLayer(8, weight_drop=rate, dtype=dtype)
  params = layer.init(jax.random.PRNGKey(1), x, lengths)['params']
  train = lambda p, key: layer.apply({'params': p}, x, lengths, deterministic=False, rngs={'dropout': key})[1]
  key = jax.random.PRNGKey(7)
  grad_h = jax.grad(lambda p: jnp.sum(train(p, key) ** 2))(params)['kernel_h']
  kept = np.asarray(grad_h) != 0
  assert 0.55 < kept.mean() < 0.85  # ~1 - rate of 8 x 32 entries.
  masked = dict(params, kernel_h=jnp.where(kept, params['kernel_h'] / (1 - rate), 0.0))
  real = (np.arange(ids.shape[1])[None] < np.asarray(lengths)[:, None])[..., None]
  expected = layer.apply({'params': masked}, x, lengths)[1]
  np.testing.assert_allclose(np.asarray(train(params, key)) * real, np.asarray(expected) * real, atol=1e-6)
  # Another key, another mask; evaluation ignores the rate.
  assert not np.allclose(train(params, jax.random.PRNGKey(8)), train(params, key))
  np.testing.assert_array_equal(layer.apply({'params': params}, x, lengths)[1],
                                LSTMLayer(8, dtype=dtype).apply({'params': params}, x, lengths)[1])


def test_weight_drop_reaches_every_layer_of_both_models_from_the_config():
  model_section = {'name': 'lstm_lm', 'embed_dim': 6, 'dropout': 0.0,
                   'lstm': {'hidden_dim': 5, 'num_layers': 2, 'bidirectional': False, 'forget_bias': 0.0,
                            'dtype': 'float32', 'tie_embeddings': False, 'weight_drop': 0.5}}
  ids, lengths = tokens()
  for name in ('lstm_lm', 'lstm'):
    model = registry.from_section(dict(model_section, name=name), vocab_size=VOCAB, num_classes=CLASSES)
    fns = registry.model_fns(model)
    params = fns.init(jax.random.PRNGKey(0), ids, lengths)
    outputs = lambda p: fns.sequence_states(p, ids, lengths, dropout_key=jax.random.PRNGKey(3))
    grads = jax.grad(lambda p: jnp.sum(outputs(p) ** 2))(params)
    for layer in ('layers_0_0', 'layers_1_0'):
      zero = np.asarray(grads[layer]['kernel_h']) == 0
      assert 0.3 < zero.mean() < 0.7, (name, layer, zero.mean())
      assert not np.any(np.asarray(grads[layer]['kernel_i']) == 0)
