"""Compression: int8 quantization (qwix), magnitude pruning in the optimizer state, and
distillation as a task; each writes a run that load_run loads."""
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import qwix

from bigjax import experiment
from bigjax import runs
from bigjax import training
from bigjax.compress import distill, pruning, quantize, quantized_run
from bigjax.config import checks
from bigjax.data import sources
from bigjax.errors import ConfigError
from bigjax.export import export, loader
from bigjax.models import registry
from bigjax.train import loop
from test_train import ROOT, tiny_config, write_corpus
from tests.entry_points import run_cases

# A StableHLO dot_general of two int8 operands with int32 results.
INT8_DOT = re.compile(r'stablehlo\.dot_general .*: \(tensor<[0-9?x]+xi8>, tensor<[0-9?x]+xi8>\) -> tensor<[0-9?x]+xi32>')


# --- Quantization ------------------------------------------------------------------------

def test_quantize_dequantize_error_is_at_most_half_a_step_per_channel():
  rng = np.random.default_rng(0)
  # Channels of very different scales: one scale for all would round the small ones to zero.
  kernel = jnp.asarray(rng.normal(size=(64, 32)) * np.logspace(-3, 1, 32)[None, :], jnp.float32)
  q = qwix.quantize(kernel, jnp.int8, channelwise_axes=[1])
  assert q.qvalue.dtype == jnp.int8 and q.scale.shape == (1, 32)
  step = np.asarray(q.scale)  # One step of the int8 grid, per output channel.
  error = np.abs(np.asarray(qwix.dequantize(q)) - np.asarray(kernel))
  # qwix's step is absmax / 127.5: the largest value lands on 127.5 and is clipped to 127,
  # exactly half a step (up to float32 rounding of the scale).
  assert (error <= 0.5 * step * (1 + 1e-4)).all()
  assert error.max() > 0.49 * step.min()
  # The embedding table: one scale per row.
  table = jnp.asarray(rng.normal(size=(50, 16)) * np.logspace(-2, 1, 50)[:, None], jnp.float32)
  rows = quantize.quantize_rows(table)
  assert rows.scale.shape == (50, 1)
  row_error = np.abs(np.asarray(qwix.dequantize(rows)) - np.asarray(table))
  assert (row_error <= 0.5 * np.asarray(rows.scale) * (1 + 1e-4)).all()


def test_int8_matmul_equals_the_float_matmul_of_the_dequantized_operands():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(8, 64)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(64, 16)), jnp.float32)
  qx, qw = qwix.quantize(x, jnp.int8, channelwise_axes=[0]), qwix.quantize(w, jnp.int8, channelwise_axes=[1])
  dims = (((1,), (0,)), ((), ()))
  int8 = jax.jit(lambda a, b: qwix.dot_general(a, b, dims))
  assert INT8_DOT.search(int8.lower(qx, qw).as_text()), 'no int8 x int8 -> int32 dot in the program'
  reference = np.asarray(qwix.dequantize(qx), np.float64) @ np.asarray(qwix.dequantize(qw), np.float64)
  # int32 sums are exact; what is left is the float32 rescaling: a few ulps.
  np.testing.assert_allclose(np.asarray(int8(qx, qw)), reference, rtol=1e-5, atol=1e-5)


def tiny_module(kind):
  section = {'name': kind, 'embed_dim': 16, 'dropout': 0.0,
             'mlp': {'hidden_dim': 16, 'num_layers': 1, 'word_dropout': 0.0, 'bigram_buckets': 31},
             'lstm': {'hidden_dim': 16, 'num_layers': 1, 'bidirectional': False, 'forget_bias': 0.0,
                      'dtype': 'float32', 'tie_embeddings': False},
             'transformer': dict(registry.spec('transformer').defaults(), num_layers=1, num_heads=2,
                                 intermediate_dim=32, max_positions=16)}
  return registry.from_section(section, vocab_size=40, num_classes=3)


def tiny_model(kind):
  model = tiny_module(kind)
  ids = jnp.asarray(np.random.default_rng(2).integers(1, 40, (6, 12)), jnp.int32)
  lengths = jnp.asarray([12, 9, 5, 3, 1, 7], jnp.int32)
  return model, model.init(jax.random.PRNGKey(0), ids, lengths)['params'], ids, lengths


@pytest.mark.parametrize('kind', ['mlp', 'lstm'])
def test_the_two_modes_run_what_they_say(kind):
  model, params, ids, lengths = tiny_model(kind)
  example = (ids[:1], lengths[:1])
  float_logits = model.apply({'params': params}, ids, lengths)
  # Both modes store int8 values and scales, nothing else of the kernels and tables.
  stored = quantize.quantize(model, params, example, 'weights')
  sizes = quantize.int8_bytes(stored)
  floats = sum(np.size(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
               if 'bias' in jax.tree_util.keystr(path))
  assert sizes['float'] == 4 * floats and sizes['int8_values'] == sum(np.size(l) for l in jax.tree.leaves(params)) - floats
  # weights: the float model itself, on weights within half a step of the trained ones.
  module, weights, fns = quantize.for_inference(model, stored, 'weights')
  assert module is model
  rounded_tree = quantize.dequantize(weights)
  for (path, trained), rounded in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(rounded_tree)):
    error = np.abs(np.asarray(rounded) - np.asarray(trained)).max()
    assert error <= np.abs(np.asarray(trained)).max() / 127 * 0.5 + 1e-7, jax.tree_util.keystr(path)
  weights_logits = jax.jit(lambda p: fns.logits(p, ids, lengths, None))(weights)
  np.testing.assert_allclose(weights_logits, float_logits, atol=0.05)
  # The tables stay int8 (rows gathered, then scaled): the float model on the whole table
  # dequantized first computes the same logits.
  tables = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(weights, is_leaf=quantize.is_quantized)[0]
            if jax.tree_util.keystr(path).endswith("embedding']")]
  assert tables and all(isinstance(t, qwix.QArray) for t in tables)
  np.testing.assert_allclose(weights_logits, model.apply({'params': rounded_tree}, ids, lengths), rtol=1e-6, atol=1e-6)
  # int8: int8 dots in the compiled program, close to the float model; no float copy of a table.
  module, stored, fns = quantize.for_inference(model, quantize.quantize(model, params, example, 'int8'), 'int8')
  run = jax.jit(lambda p: fns.logits(p, ids, lengths, None))
  program = run.lower(stored).as_text()
  assert INT8_DOT.search(program), 'no int8 x int8 -> int32 dot in the program'
  for table in tables:
    assert f'tensor<{table.qvalue.shape[0]}x{table.qvalue.shape[1]}xf32>' not in program, 'a table was made float'
  int8_logits = run(stored)
  assert float(jnp.abs(int8_logits - float_logits).max()) < 0.05 * float(jnp.abs(float_logits).max()) + 1e-3


@pytest.mark.parametrize('kind', ['lstm', 'transformer'])
def test_static_activation_scales_are_refused_for_the_lstm_and_the_transformer(kind):
  with pytest.raises(ValueError, match=f"'static' does not work for model '{kind}'"):
    quantize.check_choice(tiny_module(kind), 'int8', 'static')


# The Transformer's kernels (one layer) besides the pooler's and the head's: what int8 and pruning take.
TRANSFORMER_KERNELS = {f'layers_0/{name}/kernel' for name in ('query', 'key', 'value', 'attention_output',
                                                               'intermediate', 'output')} | {
                                                                   'pooler_dense/kernel', 'head/kernel'}
# Its matmuls of two float32 operands: the attention's query x key and weights x value.
FLOAT_DOT = re.compile(r'stablehlo\.dot_general .*: \(tensor<[0-9?x]+xf32>, tensor<[0-9?x]+xf32>\)')


def test_an_int8_transformer_is_int8_padding_invariant_and_as_accurate_as_the_float_one(tiny_transformer_run,
                                                                                          tmp_path):
  workdir, data = tiny_transformer_run
  source = runs.load_run(workdir)
  dev, test = (sources.load_labelled_examples(os.path.join(data, f'{split}.txt'), label_names=source.label_names)
               for split in ('dev', 'test'))
  int8 = quantized_run.quantize_run(source, str(tmp_path / 'int8'), mode='int8', activations='dynamic',
                                    dev_texts=dev.texts, dev_labels=dev.labels)
  # Stored: every kernel and the word table as int8 values and scales; the LayerNorms, biases and
  # the position and token-type tables (added, not multiplied) as float32.
  leaves = {pruning.leaf_path(path): leaf for path, leaf in
            jax.tree_util.tree_flatten_with_path(int8.params, is_leaf=quantize.is_quantized)[0]}
  quantized = {path for path, leaf in leaves.items() if quantize.is_quantized(leaf)}
  assert quantized == TRANSFORMER_KERNELS | {'embedding/embedding'}
  for path in quantized:
    assert getattr(leaves[path], 'array', leaves[path]).qvalue.dtype == jnp.int8, path
  assert {str(np.asarray(leaves[path]).dtype) for path in set(leaves) - quantized} == {'float32'}
  assert {'position_embedding', 'type_embedding', 'layers_0/attention_norm/scale'} <= set(leaves) - quantized
  # In the program: an int8 x int8 -> int32 dot per kernel; the attention's two products in float32.
  rng = np.random.default_rng(5)
  ids = np.zeros((3, 16), np.int32)
  lengths = np.array([9, 3, 1], np.int32)
  for row, n in enumerate(lengths):
    ids[row, :n] = rng.integers(1, int8.derived.vocab_size, n)
  logits = jax.jit(lambda p, i, n: int8.fns.logits(p, i, n, None))
  program = logits.lower(int8.params, ids, lengths).as_text()
  assert len(INT8_DOT.findall(program)) == len(TRANSFORMER_KERNELS) and len(FLOAT_DOT.findall(program)) == 2
  # What the padded positions hold changes nothing, exactly, as in the float model: no int8 scale spans
  # the padded keys. (Another width may differ by a rounding step: the float sums' last bits differ.)
  noisy = np.where(np.arange(16)[None] < lengths[:, None], ids, rng.integers(1, int8.derived.vocab_size, ids.shape))
  np.testing.assert_array_equal(logits(int8.params, ids, lengths), logits(int8.params, noisy, lengths))
  # As accurate: the run told the classes apart, and int8 loses at most 2 of the 40 test examples.
  float_probabilities, int8_probabilities = source.probabilities(test.texts), int8.probabilities(test.texts)
  float_accuracy, int8_accuracy = (np.mean(p.argmax(1) == np.asarray(test.labels))
                                   for p in (float_probabilities, int8_probabilities))
  assert float_accuracy >= 0.8 and abs(int8_accuracy - float_accuracy) <= 2 / 40, (float_accuracy, int8_accuracy)
  assert np.abs(int8_probabilities - float_probabilities).max() < 0.05


# --- Pruning -----------------------------------------------------------------------------

def test_cubic_schedule_has_zhu_and_gupta_shape():
  s = pruning.cubic_sparsity(0.8, begin_step=10, end_step=110)
  values = {t: float(s(t)) for t in (0, 10, 35, 60, 110, 500)}
  assert values[0] == values[10] == 0.0
  assert values[35] == pytest.approx(0.8 * (1 - 0.75 ** 3))  # A quarter of the way: 58 % of the target.
  assert values[60] == pytest.approx(0.8 * (1 - 0.5 ** 3))  # Half way: 7/8 of it.
  assert values[110] == values[500] == pytest.approx(0.8)
  steps = pruning.pruning_steps(10, 110, 25)
  assert [t for t in range(200) if steps(t)] == [10, 35, 60, 85, 110]


def _prune_sgd(params, sparsity, scope, steps=5):
  tx = optax.chain(optax.sgd(0.1), pruning.magnitude_pruning(lambda _: sparsity, lambda _: True, scope=scope))
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  update = jax.jit(tx.update)  # One compilation, not one per operation (seconds for a Transformer).
  for _ in range(steps):
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def test_layer_and_global_scopes():
  rng = np.random.default_rng(3)
  params = {'big': {'kernel': jnp.asarray(rng.normal(size=(20, 10)) * 10, jnp.float32)},
            'small': {'kernel': jnp.asarray(rng.normal(size=(10, 10)), jnp.float32),
                      'bias': jnp.asarray(rng.normal(size=(10,)), jnp.float32)}}
  pruned, _ = _prune_sgd(params, 0.5, 'layer')
  for leaf in ('big', 'small'):
    assert np.mean(np.asarray(pruned[leaf]['kernel']) == 0.0) == pytest.approx(0.5, abs=0.01)
  assert np.count_nonzero(pruned['small']['bias']) == 10  # Biases are never pruned.
  pruned, _ = _prune_sgd(params, 0.5, 'global')
  total = np.concatenate([np.asarray(pruned[k]['kernel']).ravel() for k in ('big', 'small')])
  assert np.mean(total == 0.0) == pytest.approx(0.5, abs=0.01)
  # One threshold over both: the small-scale layer loses far more than half.
  assert np.mean(np.asarray(pruned['small']['kernel']) == 0.0) > 0.9


def test_pruning_a_transformer_takes_its_kernels_and_word_table_to_the_target(tiny_transformer_run):
  params = jax.tree.map(jnp.asarray, runs.load_run(tiny_transformer_run[0]).params)
  pruned, state = _prune_sgd(params, 0.5, 'layer', steps=1)
  # Not the position and token-type tables (added to every token, as a bias is), LayerNorms or biases.
  assert set(state[1].masks) == TRANSFORMER_KERNELS | {'embedding/embedding'}
  for path, leaf in jax.tree_util.tree_flatten_with_path(pruned)[0]:
    name, leaf = pruning.leaf_path(path), np.asarray(leaf)
    if name in state[1].masks:
      assert np.mean(leaf == 0.0) == pytest.approx(0.5, abs=1 / leaf.size), name
    else:
      assert np.count_nonzero(leaf) == leaf.size, name


def _prune_config(data, **extra):
  return tiny_config(data, **{'prune.target_sparsity': 0.6, 'prune.every_steps': 2, 'train.steps': 16,
                              'checkpoint.every_steps': 4, **extra})


def test_pruned_weights_stay_exactly_zero_through_training_and_a_resume(tmp_path):
  data = write_corpus(tmp_path / 'data')
  straight = training.run_training(_prune_config(data), str(tmp_path / 'straight'))
  training.run_training(_prune_config(data), str(tmp_path / 'resumed'), stop_after_steps=8)
  resumed = training.run_training(_prune_config(data), str(tmp_path / 'resumed'))
  assert resumed['params_fingerprint'] == straight['params_fingerprint']
  # The masks are optimizer state: the final checkpoint holds them, and they equal the zeros.
  exp = experiment.build_experiment(_prune_config(data), None)
  state = exp.init_state()
  from bigjax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path / 'resumed' / 'checkpoints'))
  restored, _ = ckpt.restore(16, checkpoint_lib.abstract_like(state))
  ckpt.close()
  masks = restored.opt_state[1].masks
  flat = {pruning.leaf_path(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(restored.params)[0]}
  assert set(masks) == {'embedding/embedding', 'hidden_0/kernel', 'head/kernel'}
  for path, mask in masks.items():
    assert np.array_equal(flat[path] == 0.0, ~np.asarray(mask)), path
    assert np.mean(flat[path] == 0.0) == pytest.approx(0.6, abs=0.02), path
  # And they stay zero as training goes on: 4 more steps from the pruned state.
  more = _prune_config(data, **{'train.steps': 20})
  training.run_training(more, str(tmp_path / 'resumed'))
  after = runs.load_run(str(tmp_path / 'resumed'))
  for path, mask in masks.items():
    leaf = np.asarray(dict((pruning.leaf_path(p), v) for p, v in
                           jax.tree_util.tree_flatten_with_path(after.params)[0])[path])
    assert (leaf[~np.asarray(mask)] == 0.0).all(), path


# --- Distillation ------------------------------------------------------------------------

def test_distillation_term_is_zero_when_the_logits_agree():
  logits = jnp.asarray(np.random.default_rng(4).normal(size=(5, 3)) * 3, jnp.float32)
  for temperature in (1.0, 2.0, 5.0):
    np.testing.assert_array_equal(distill.distillation_term(logits, logits, temperature), 0.0)
    other = distill.distillation_term(logits, logits[::-1], temperature)
    assert (np.asarray(other) > 0).any() and (np.asarray(other) >= -1e-6).all()


def test_a_student_learns_from_a_teacher_that_never_reaches_the_optimizer(tmp_path):
  data = write_corpus(tmp_path / 'data')
  training.run_training(tiny_config(data), str(tmp_path / 'teacher'))
  teacher = runs.load_run(str(tmp_path / 'teacher'))
  student_config = tiny_config(data, **{'distill.teacher': str(tmp_path / 'teacher'), 'distill.alpha': 0.7,
                                        'model.embed_dim': 8, 'seed': 1})
  exp = experiment.build_experiment(student_config, None)
  assert isinstance(exp.task, distill.Distillation)
  # The optimizer state holds moments of the student's leaves only.
  state = exp.init_state()
  moments = state.opt_state[0].mu
  assert jax.tree.structure(moments) == jax.tree.structure(state.params)
  assert jax.tree.leaves(moments)[0].shape[-1] == 8
  results = training.run_training(student_config, str(tmp_path / 'student'))
  assert results['test']['accuracy'] > 0.65  # Chance is 0.5; 24 steps of a width-8 student.
  logged = [json.loads(line) for line in (tmp_path / 'student' / 'metrics.jsonl').read_text().splitlines()]
  assert all(r['distill'] >= 0 for r in logged if r['kind'] == 'train') and any(r['kind'] == 'train' for r in logged)
  again = runs.load_run(str(tmp_path / 'teacher'))
  assert loop.params_fingerprint(again.params) == loop.params_fingerprint(teacher.params)
  info = json.loads((tmp_path / 'student' / 'config.json').read_text())
  assert info['derived']['distill']['teacher'] == str(tmp_path / 'teacher')


def test_a_student_may_start_only_from_a_run_with_the_teachers_tokenizer(tmp_path):
  data = write_corpus(tmp_path / 'data')
  training.run_training(tiny_config(data, **{'train.steps': 5}), str(tmp_path / 'teacher'))
  training.run_training(tiny_config(data, **{'train.steps': 5, 'data.vocab_size': 90}), str(tmp_path / 'other'))
  teacher = runs.load_run(str(tmp_path / 'teacher'))
  # A pruning run distilled from its own source: it starts from the source's parameters.
  config = tiny_config(data, **{'distill.teacher': str(tmp_path / 'teacher'), 'init.checkpoint': str(tmp_path / 'teacher')})
  checks.check_config(config)
  exp = experiment.build_experiment(config, None)
  assert isinstance(exp.task, distill.Distillation)
  assert loop.params_fingerprint(exp.init_state().params) == loop.params_fingerprint(teacher.params)
  with pytest.raises(ConfigError, match='different tokenizers'):
    experiment.build_experiment(tiny_config(data, **{'distill.teacher': str(tmp_path / 'teacher'),
                                                 'init.checkpoint': str(tmp_path / 'other')}), None)
  vectors = tiny_config(data, **{'distill.teacher': str(tmp_path / 'teacher'), 'init.embeddings': str(tmp_path / 'x')})
  with pytest.raises(ConfigError, match='distill.teacher and init.embeddings'):
    checks.check_config(vectors)


# --- The entry point: a compressed run is a run -------------------------------------------

def compress(*args, timeout=600):
  return subprocess.run([sys.executable, '-m', 'experiments.compress', *args, '--latency_rounds=1'], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def _check_report_matches_the_loaded_run(out, data):
  report = json.loads((out / 'compression.json').read_text())
  loaded = runs.load_run(str(out))
  test = sources.load_labelled_examples(str(data / 'test.txt'), label_names=loaded.label_names)
  assert loaded.evaluate(test.texts, test.labels)['accuracy'] == report['after']['test_accuracy']
  assert (out / 'compression.md').read_text().count('|') > 10
  return report, loaded


def test_a_quantized_run_loads_and_matches_its_report(tiny_transformer_run, tmp_path):
  data = write_corpus(tmp_path / 'data')
  training.run_training(tiny_config(data, **{'model.mlp.bigram_buckets': 64}), str(tmp_path / 'run'))
  out = tmp_path / 'int8'
  # Both commands in one helper process (tests/entry_points.py), each as `python -m experiments.compress`;
  # standard output to a file of its own, standard error alone in 'output'. The second asks for a
  # mode the model cannot take: static scales for a Transformer (the session's tiny run).
  cases = {'int8': ['--method=quantize', f'--from={tmp_path / "run"}', f'--workdir={out}',
                    '--config.quantize.activations=static', '--config.quantize.calibration_examples=64'],
           'bad': ['--method=quantize', f'--from={tiny_transformer_run[0]}', f'--workdir={tmp_path / "bad"}',
                   '--config.quantize.activations=static']}
  done = run_cases({name: ('experiments.compress', argv + ['--latency_rounds=1'], str(tmp_path / f'{name}.out'))
                    for name, argv in cases.items()}, str(tmp_path))
  assert done['int8']['rc'] == 0, done['int8']['output'][-3000:]
  report, loaded = _check_report_matches_the_loaded_run(out, data)
  # At this toy size Orbax's own files outweigh the arrays on disk; the arrays themselves:
  # int8 values and float32 scales, one per row of 16 (docs/results/compression.md has real sizes).
  stored = loaded.derived.quantization['stored_bytes']
  assert sum(stored.values()) < 0.35 * 4 * report['before']['parameters']
  assert loaded.derived.quantization['calibration_examples'] == 64
  # It exports as any run does: int8 arrays in the artifact, int8 matmuls in its program, and
  # the artifact's probabilities equal the quantized run's.
  test = sources.load_labelled_examples(str(data / 'test.txt'), label_names=loaded.label_names)
  summary = export.export_run(loaded, str(tmp_path / 'artifact'), platforms=('cpu',),
                              evaluation_data=('test', test.texts, test.labels))
  assert summary['round_trip']['max_abs_diff'] < 1e-6
  with np.load(tmp_path / 'artifact' / loader.PARAMS_FILE) as arrays:
    # Kernels and tables alike: no float copy of either travels in the artifact.
    assert arrays['hidden_0/kernel/qvalue'].dtype == np.int8 and arrays['embedding/embedding/qvalue'].dtype == np.int8
    assert arrays['embedding/embedding/scale'].shape == (arrays['embedding/embedding/qvalue'].shape[0], 1)
    assert 'embedding/embedding' not in arrays
  assert INT8_DOT.search(loader.load(str(tmp_path / 'artifact')).exported.mlir_module())
  card = (tmp_path / 'artifact' / 'MODEL_CARD.md').read_text()
  assert 'int8 quantization with qwix (int8 mode, static activation scales)' in card
  # A mode the model cannot take: one line, exit status 2.
  bad = done['bad']
  assert bad['rc'] == 2 and bad['output'].strip().splitlines()[-1].startswith('error: '), bad['output'][-3000:]
  assert 'MLP only' in bad['output']
  assert not os.path.exists(tmp_path / 'bad' / 'compression.json')


@pytest.mark.slow
def test_a_pruned_run_from_the_entry_point_loads_and_matches_its_report(tmp_path):
  data = write_corpus(tmp_path / 'data')
  training.run_training(tiny_config(data), str(tmp_path / 'run'))
  out = tmp_path / 'pruned'
  done = compress(f'--from={tmp_path / "run"}', '--method=prune', f'--workdir={out}', '--config.train.epochs=1',
                  '--config.prune.target_sparsity=0.5', '--config.distill.teacher=')  # The labels alone.
  assert done.returncode == 0, done.stderr[-3000:]
  report, _ = _check_report_matches_the_loaded_run(out, data)
  assert report['sparsity']['sparsity'] == pytest.approx(0.5, abs=0.02)
  assert report['sparsity']['sparse_bytes'] < report['sparsity']['dense_bytes']
  assert report['description'].endswith('on the labels alone')


def test_pruning_learns_from_its_source_by_default(tmp_path):
  data = write_corpus(tmp_path / 'data')
  run = str(tmp_path / 'run')
  training.run_training(tiny_config(data, **{'train.steps': 2, 'checkpoint.every_steps': 2}), run)
  quick = ['--method=prune', f'--from={run}', '--config.train.epochs=1', '--config.prune.target_sparsity=0.5',
           '--latency_rounds=1', f'--workdir={tmp_path / "taught"}']
  outcome = run_cases({'default': ('experiments.compress', quick)}, str(tmp_path))['default']
  assert outcome['rc'] == 0, outcome['output'][-3000:]
  taught = json.loads((tmp_path / 'taught' / 'compression.json').read_text())['description']
  assert f'distilled from {run}' in taught, taught
  assert json.loads((tmp_path / 'taught' / 'config.json').read_text())['config']['distill']['teacher'] == run


def test_pruning_curve_tabulates_and_plots_reports(tmp_path):
  def report(folder, sparsity, accuracy, method='prune', source='/runs/mlp'):
    os.makedirs(folder)
    row = lambda workdir, acc: {'workdir': workdir, 'test_accuracy': acc, 'dev_accuracy': acc - 0.01,
                                'bytes_on_disk': 1000}
    with open(os.path.join(folder, 'compression.json'), 'w', encoding='utf-8') as f:
      json.dump({'method': method, 'before': row(source, 0.82), 'after': row(str(folder), accuracy),
                 'sparsity': {'sparsity': sparsity, 'sparse_bytes': int(1000 * (1 - sparsity))}}, f)
    return str(folder)

  folders = [report(tmp_path / 'p90', 0.9, 0.78), report(tmp_path / 'p50', 0.5, 0.815)]
  out = str(tmp_path / 'curve')
  done = subprocess.run([sys.executable, '-m', 'benchmarks.pruning_curve', f'--runs={",".join(folders)}',
                         f'--out={out}'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = [line for line in open(out + '.md', encoding='utf-8').read().splitlines() if line.startswith('| ') and '%' in line]
  assert [r.split('|')[1].strip() for r in rows] == ['0 %', '50 %', '90 %']  # The source first, then by sparsity.
  assert '-4.00' in rows[2]
  with open(out + '.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  bad = report(tmp_path / 'q', 0.0, 0.8, method='quantize')
  done = subprocess.run([sys.executable, '-m', 'benchmarks.pruning_curve', f'--runs={bad}', f'--out={out}'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2 and 'not prune' in done.stderr
