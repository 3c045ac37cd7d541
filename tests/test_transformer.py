"""The Transformer encoder (bigjax/models/transformer.py): padding invariance, gradients, remat,
the MLM head's tying, bf16, logical axes, and training, export and loading through the registry."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bigjax import runs
from bigjax import training
from bigjax.config import checks
from bigjax.export import export, loader
from bigjax.models import registry, transformer
from bigjax.tasks.classification import Classification
from bigjax.types import Batch
from experiments.configs import transformer_sst2
from tests.test_train import TINY_TRANSFORMER, tiny_config, write_corpus

VOCAB, CLASSES = 40, 3
TASK = Classification(CLASSES)


def make(dropout=0.0, **extra):
  kwargs = dict(num_layers=2, num_heads=4, intermediate_dim=24, max_positions=32, attention_dropout=0.0)
  kwargs.update(extra)
  return registry.build_model('transformer', vocab_size=VOCAB, num_classes=CLASSES, embed_dim=16, dropout=dropout,
                              **kwargs)


def tokens(seed=0, batch=5, width=9):
  rng = np.random.default_rng(seed)
  lengths = np.array([1, 9, 4, 6, 2][:batch], np.int32)
  lengths = np.minimum(lengths, width)
  ids = rng.integers(1, VOCAB, (batch, width)).astype(np.int32)
  ids[np.arange(width)[None] >= lengths[:, None]] = 0
  return jnp.asarray(ids), jnp.asarray(lengths)


def random_params(model, ids, lengths, method=None, dtype=np.float32, seed=0):
  """Parameters of init's shapes drawn with numpy: weights N(0, 0.2^2) (10x BERT's std: well away
  from the near-zero start, where bf16 and f32 agree trivially), LayerNorm scales near 1, biases
  near 0. No init to compile: most of a tiny model's cost is compiling."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, lengths, method=method))['params']

  def draw(path, leaf):
    centre = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
    return jnp.asarray(centre + rng.normal(0.0, 0.2 if len(leaf.shape) > 1 else 0.05, leaf.shape), dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope='module')
def params():
  """One set of parameters for every 2-layer configuration here: pre-LN's final_norm, the pooler
  and head, and the MLM head all in it (apply ignores the ones a configuration does not read)."""
  ids, lengths = tokens()
  return random_params(make(pre_ln=True), ids, lengths, method=lambda m, i, l: (m(i, l), m.mlm_logits(i, l)))


def test_each_row_of_a_padded_batch_gets_the_logits_it_gets_alone(params):
  """Post- and pre-LN, cls and mean pooling; the row padded from 3 tokens to 8, with junk ids
  past its length, and the full row, each against itself alone."""
  combos = [(pre_ln, pooling) for pre_ln in (False, True) for pooling in ('cls', 'mean')]
  # One compiled function for the four models: a compile per shape, not per model and shape.
  logits = jax.jit(lambda p, ids, lengths: [make(pre_ln=pre_ln, pooling=pooling).apply({'params': p}, ids, lengths)
                                            for pre_ln, pooling in combos])
  ids = jnp.array([[5, 9, 3, 7, 7, 7, 7, 7], [4, 8, 2, 6, 1, 3, 5, 9]], jnp.int32)
  lengths = jnp.array([3, 8], jnp.int32)
  batched, short, full = logits(params, ids, lengths), logits(params, ids[:1, :3], lengths[:1]), logits(
      params, ids[1:], lengths[1:])
  for (pre_ln, pooling), together, alone_0, alone_1 in zip(combos, batched, short, full):
    np.testing.assert_allclose(together[0], alone_0[0], atol=1e-5, err_msg=f'pre_ln={pre_ln} pooling={pooling}')
    np.testing.assert_allclose(together[1], alone_1[0], atol=1e-5, err_msg=f'pre_ln={pre_ln} pooling={pooling}')
    assert np.abs(np.asarray(together[0] - together[1])).max() > 1e-3  # Not a constant model.


def assert_directional_derivatives(value_and_grad, params, grad, rng, directions: int = 3):
  """Central differences of the loss along random directions match grad's projection on them
  (float64 params; value_and_grad(params) -> (loss, grads))."""
  for _ in range(directions):
    direction = jax.tree.map(lambda p: rng.normal(size=p.shape), params)
    step = lambda sign, d=direction: jax.tree.map(lambda p, d: p + sign * 1e-6 * d, params, d)
    numeric = (float(value_and_grad(step(1.0))[0]) - float(value_and_grad(step(-1.0))[0])) / 2e-6
    analytic = sum(float(np.vdot(g, d)) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    assert abs(analytic) > 1e-3
    np.testing.assert_allclose(numeric, analytic, rtol=1e-6)


def test_gradients_match_finite_differences():
  """Central differences of the loss along random directions in parameter space match the
  gradient's projection on them (float64; what jax.test_util.check_grads checks, in one compile).

  BERT's layout: post-LN, the first position through the tanh pooler. (In float64 the attention
  is the module's own XLA ops: jax.nn.dot_product_attention rounds its softmax to float32.)"""
  ids, lengths = tokens(batch=3, width=6)
  batch = Batch(ids, lengths, jnp.array([0, 2, 1]), jnp.array([1.0, 1.0, 0.0]))
  rng = np.random.default_rng(1)
  with jax.enable_x64():
    model = make(num_layers=1, intermediate_dim=8, param_dtype=jnp.float64)
    fns = registry.model_fns(model)
    params = jax.tree.map(np.asarray, random_params(model, ids, lengths, dtype=np.float64))
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: TASK.loss(fns, p, batch, None)[0]))
    _, grad = value_and_grad(params)
    assert_directional_derivatives(value_and_grad, params, grad, rng)


def test_a_padded_position_gets_no_gradient(params):
  """Post-LN with cls pooling, pre-LN with mean pooling: a padded position's word embedding
  never reaches the logits; every real one does."""
  ids, lengths = tokens()
  padded = np.arange(ids.shape[1])[None] >= np.asarray(lengths)[:, None]
  models = [registry.model_fns(make(pre_ln=pre_ln, pooling=pooling)) for pre_ln, pooling in ((False, 'cls'),
                                                                                          (True, 'mean'))]

  def outputs(p, fns):
    embeddings = fns.embed(p, ids)
    grad = jax.grad(lambda e: fns.logits_from_embeddings(p, e, lengths).sum())(embeddings)
    return (grad, fns.logits_from_embeddings(p, embeddings, lengths), fns.logits(p, ids, lengths),
            fns.sequence_states(p, ids, lengths))

  for grad, from_embeddings, logits, states in jax.jit(lambda p: [outputs(p, fns) for fns in models])(params):
    assert np.abs(np.asarray(grad)[padded]).max() == 0.0
    assert np.abs(np.asarray(grad)[~padded]).sum(-1).min() > 0.0
    np.testing.assert_allclose(from_embeddings, logits, atol=1e-6)
    assert states.shape == (5, 9, 16)
  assert models[0].slot_tokens(4).tolist() == np.eye(4).tolist()


def step_outputs(model, params):
  """((training loss, its gradients), evaluation logits) at one batch, dropout on (attention
  dropout too): the same masks for models of the same shapes, whatever their remat or dtype."""
  ids, lengths = tokens()
  batch = Batch(ids, lengths, jnp.array([0, 2, 1, 1, 0]), jnp.ones(5))
  fns = registry.model_fns(model)
  loss = lambda p: (TASK.loss(fns, p, batch, jax.random.PRNGKey(4))[0], fns.logits(p, ids, lengths))
  (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return (value, grads), logits


@pytest.fixture(scope='module')
def float32_step(params):
  return step_outputs(make(dropout=0.2, attention_dropout=0.1), params)


def test_remat_gives_the_same_loss_and_gradients(params):
  # Without dropout: rematerialized layers run as a scan that draws each layer's dropout key
  # from one split (bigjax/models/transformer.py), other masks than the unrolled layers' draw.
  (reference, reference_grads), _ = step_outputs(make(dropout=0.0, attention_dropout=0.0), params)
  for policy in ('nothing_saveable', 'dots_saveable'):
    (value, grads), _ = step_outputs(make(dropout=0.0, attention_dropout=0.0, remat=policy), params)
    np.testing.assert_allclose(value, reference, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads, reference_grads)
    assert float(jnp.abs(grads['layers_0']['query']['kernel']).max()) > 0.0


def test_remat_with_dropout_is_deterministic_and_drops(params, float32_step):
  model = make(dropout=0.2, attention_dropout=0.1, remat='nothing_saveable')
  (first, grads), logits = step_outputs(model, params)
  (again, _), _ = step_outputs(model, params)
  assert float(first) == float(again)
  (no_dropout, _), _ = step_outputs(make(dropout=0.0, attention_dropout=0.0, remat='nothing_saveable'), params)
  assert float(first) != float(no_dropout)
  np.testing.assert_allclose(logits, float32_step[1], rtol=1e-5, atol=1e-6)  # Evaluation: no dropout, same logits.
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_mlm_head_decodes_with_the_word_embedding_table(params):
  model = make()
  ids, lengths = tokens()
  own = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(5), ids, lengths, method='mlm_logits'))['params']
  # Its own parameters: the transform, its LayerNorm and a bias; no decoder matrix of its own.
  assert jax.tree.map(lambda x: x.shape, own['mlm_head']) == {
      'transform': {'kernel': (16, 16), 'bias': (16,)}, 'transform_norm': {'scale': (16,), 'bias': (16,)},
      'bias': (VOCAB,)}
  assert 'head' not in own and 'pooler_dense' not in own  # A pretraining model has no classifier.
  params = {**params, 'mlm_head': {**params['mlm_head'], 'bias': jax.random.normal(jax.random.PRNGKey(6), (VOCAB,))}}

  def outputs(p):
    logits = model.apply({'params': p}, ids, lengths, method='mlm_logits')
    return logits[:, :, VOCAB - 1].sum(), (logits, model.apply({'params': p}, ids, lengths, method='mlm_features'))

  grads, (logits, features) = jax.jit(jax.grad(outputs, has_aux=True))(params)
  assert logits.shape == (5, 9, VOCAB) and logits.dtype == jnp.float32
  table = params['embedding']['embedding']
  np.testing.assert_allclose(logits, features @ table.T + params['mlm_head']['bias'], rtol=1e-5, atol=1e-4)
  # Tied: the table's gradient has the decoder's share, in a row no input token looked up too.
  assert VOCAB - 1 not in np.asarray(ids)
  assert np.abs(np.asarray(grads['embedding']['embedding'][VOCAB - 1])).max() > 0.0


def test_bf16_compute_tracks_float32(params, float32_step):
  (_, grads32), logits32 = float32_step
  (_, grads16), logits16 = step_outputs(make(dropout=0.2, attention_dropout=0.1, dtype=jnp.bfloat16), params)
  assert logits16.dtype == jnp.float32
  np.testing.assert_allclose(logits16, logits32, rtol=5e-2, atol=5e-2 * float(jnp.abs(logits32).max()))
  assert np.abs(np.asarray(logits16 - logits32)).max() > 0.0  # bf16 indeed.
  for path, g32 in jax.tree_util.tree_leaves_with_path(grads32):
    name = jax.tree_util.keystr(path)
    if "key']['bias" in name or 'final_norm' in name or 'mlm_head' in name:
      continue  # Zero in exact arithmetic (softmax ignores a shift per query), or unused by post-LN.
    g16 = _at(grads16, path)
    assert g16.dtype == jnp.float32
    error = float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32))
    assert error < 5e-2, (name, error)


def _at(tree, path):
  for entry in path:
    tree = tree[entry.key]
  return tree


def test_attention_written_out_is_jax_attention_and_masks_padding():
  """The module's XLA-ops attention (dropout, float64), at a rate that keeps everything, is
  jax.nn.dot_product_attention; at any rate padded keys get no weight; a filler row is finite."""
  q, k, v = jax.random.normal(jax.random.PRNGKey(8), (3, 3, 7, 2, 4))  # Each [B=3, T=7, N=2, D=4].
  lengths = jnp.array([7, 3, 0], jnp.int32)
  key = jax.random.PRNGKey(9)

  @jax.jit
  def outputs(q, k, v):
    reference = transformer.attention(q, k, v, lengths)
    kept = transformer.attention(q, k, v, lengths, dropout_rate=1e-12, dropout_key=key)
    grad = jax.grad(lambda v: transformer.attention(q, k, v, lengths, dropout_rate=0.3, dropout_key=key).sum())(v)
    return reference, kept, grad

  reference, kept, grad = outputs(q, k, v)
  np.testing.assert_allclose(kept, reference, atol=1e-6)
  assert np.isfinite(np.asarray(reference)).all()
  assert np.abs(np.asarray(grad[1, 3:])).max() == 0.0 and np.abs(np.asarray(grad[2, 1:])).max() == 0.0
  assert np.count_nonzero(np.asarray(grad[0])) > 0


def test_parameters_carry_logical_axes_and_init_returns_plain_arrays(params):
  model = make(pooling='mean')
  ids, lengths = tokens()
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, lengths)
  leaves = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)  # Unboxed: checkpoints see arrays.
  specs = model.logical_axes(ids, lengths)
  assert jax.tree.structure(specs, is_leaf=lambda x: isinstance(x, P)) == jax.tree.structure(abstract['params'])
  assert specs['embedding']['embedding'] == P('vocab', 'embed')
  assert specs['position_embedding'] == P('position', 'embed')
  assert specs['layers_0']['query']['kernel'] == P('embed', 'heads', 'kv')
  assert specs['layers_1']['attention_output']['kernel'] == P('heads', 'kv', 'embed')
  assert specs['layers_0']['intermediate']['kernel'] == P('embed', 'mlp')
  assert specs['layers_0']['output']['kernel'] == P('mlp', 'embed')
  names = {name for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)) for name in spec}
  assert names == {'vocab', 'position', 'embed', 'heads', 'kv', 'mlp', None}
  # The boxed form (flax's own init) applies to the same logits as the plain arrays.
  boxed = jax.eval_shape(lambda: nn.Module.init_with_output(model, jax.random.PRNGKey(0), ids, lengths)[1])['params']
  assert isinstance(boxed['embedding']['embedding'], nn.Partitioned)
  plain = {key: params[key] for key in boxed}
  boxed = jax.tree.map(lambda box, value: box.replace_boxed(value), boxed, plain,
                       is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  apply = jax.jit(lambda p: model.apply({'params': p}, ids[:2, :4], lengths[:2]))
  np.testing.assert_array_equal(apply(boxed), apply(plain))


def test_flops_and_the_shipped_config():
  own = registry.spec('transformer').defaults()
  assert own['num_heads'] == 4 and own['pre_ln'] is False and own['remat'] == ''
  own.update(num_layers=2, intermediate_dim=64, pooler=False)
  flops = registry.spec('transformer').training_flops(own, batch=2, width=8, real_tokens=10, embed_dim=16,
                                                     num_classes=3)
  per_token = 2 * 2 * (4 * 16 * 16 + 2 * 16 * 64)
  assert flops['executed'] == 3 * 2 * (8 * per_token + 64 * 2 * 2 * 2 * 16 + 2 * 16 * 3)
  assert flops['useful'] == 3 * (10 * per_token + 2 * 25 * 2 * 2 * 2 * 16 + 2 * 2 * 16 * 3)
  # The shipped config's tiny variant is valid and builds a model whose heads divide its width.
  config = transformer_sst2.get_config('tiny')
  checks.check_config(config)
  model = registry.from_section(config.model.to_dict(), vocab_size=50, num_classes=2)
  ids, lengths = tokens(width=6)
  out = jax.eval_shape(lambda: model.apply(model.init(jax.random.PRNGKey(0), ids, lengths), ids, lengths))
  assert out.shape == (5, 2)
  full = transformer_sst2.get_config()
  assert full.model.embed_dim % full.model.transformer.num_heads == 0


def test_trains_exports_and_loads_through_the_registry(tiny_transformer_run, tiny_transformer_artifact):
  """The session's tiny run (tests/conftest.py: one layer, the corpus of test_train.write_corpus) and its artifact."""
  workdir, data = tiny_transformer_run
  checks.check_config(tiny_config(data, model='transformer', **TINY_TRANSFORMER))
  assert_trains_exports_and_loads(workdir, loader.load(tiny_transformer_artifact))


def assert_trains_exports_and_loads(workdir, artifact):
  logged = [json.loads(line) for line in open(f'{workdir}/metrics.jsonl', encoding='utf-8').read().splitlines()]
  train_losses = [entry['loss'] for entry in logged if entry['kind'] == 'train']
  assert train_losses[-1] < 0.5 * train_losses[0]
  results = json.loads(open(f'{workdir}/results.json', encoding='utf-8').read())
  assert results['test']['accuracy'] > 0.7  # The corpus's label is readable from its cue words.
  run = runs.load_run(workdir)
  assert isinstance(run.model, transformer.TransformerClassifier) and run.model.num_heads == 2
  texts = ['great good fine', 'awful bad poor', 'the plot was dull and the acting boring']
  assert artifact.metadata['model'] == 'transformer'
  np.testing.assert_allclose(artifact.probabilities(texts), run.probabilities(texts), atol=1e-5)


# Slow tier: the default tier checks the same on the session's one-layer run (above), trains two
# layers with dropout through experiments.train (tests/test_readme.py, transformer_sst2.py:tiny),
# and checks the 2-layer model's steps on every mesh (tests/test_sharding.py).
@pytest.mark.slow
def test_two_layers_with_dropout_train_export_and_load_through_the_registry(tmp_path):
  data = write_corpus(str(tmp_path / 'data'))
  config = tiny_config(data, model='transformer', **{
      'train.steps': 30, 'checkpoint.every_steps': 10, 'model.transformer.num_layers': 2,
      'data.max_len': 16, 'data.smallest_bucket': 16,  # One batch shape: one compile.
      'model.transformer.num_heads': 2, 'model.transformer.intermediate_dim': 32,
      'model.transformer.max_positions': 16, 'model.transformer.pooling': 'mean',
      # Attention dropout's random masks double the step's compile time; the other tests train with them.
      'model.transformer.attention_dropout': 0.0})
  checks.check_config(config)
  training.run_training(config, str(tmp_path / 'run'))
  export.write_artifact(runs.load_run(str(tmp_path / 'run')), str(tmp_path / 'artifact'))
  assert_trains_exports_and_loads(str(tmp_path / 'run'), loader.load(str(tmp_path / 'artifact')))
