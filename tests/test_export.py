"""Export: the artifact's probabilities equal the checkpoint's, it loads without bigjax or Flax,
its files are plain data, the model card's figures, and experiments.predict's JSONL."""
import copy
import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from bigjax import runs
from bigjax import training
from bigjax.config import checks
from bigjax.errors import ConfigError
from bigjax.export import export, loader, model_card
from bigjax.models import registry
from tests.entry_points import run_module
from tests.test_train import TINY_TRANSFORMER, tiny_config, write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Texts the round trip must also get right: empty, unknown words, longer than max_len.
EDGE_TEXTS = ['', 'zzz qqq unknownword', ' '.join(['good', 'bad', 'the', 'movie'] * 20), 'GOOD!!  great\tfilm']
_CACHE = {}
KINDS = {
    # keep=last with a short max_len: the loader must cut long texts at the same end as the run.
    'mlp': dict(model='mlp', **{'data.keep': 'last', 'data.max_len': 12, 'data.smallest_bucket': 4}),
    # Two buckets only: each LSTM shape costs a compilation of its own (seconds on 2 cores).
    'lstm_f32': dict(model='lstm', **{'model.lstm.dtype': 'float32', 'data.max_len': 16, 'data.smallest_bucket': 8}),
    # Reads its texts last token first: the loader must reverse each row as the run does.
    'lstm_backward': dict(model='lstm', **{'model.lstm.dtype': 'float32', 'data.max_len': 16,
                                           'data.smallest_bucket': 8, 'data.direction': 'backward'}),
}


def tiny_artifact(tmp_path_factory, kind: str):
  """(the Run, its artifact folder, its data folder) of a tiny trained run, made once per session.

  'lstm_bf16' is the f32 LSTM run's parameters in the model with bf16 matmuls (the run's
  model.lstm.dtype changed), not a run of its own: a training costs ~15 s here, and the
  export only sees the model functions and the parameters.
  """
  if kind not in _CACHE:
    base = tmp_path_factory.mktemp(f'export_{kind}')
    if kind == 'lstm_bf16':
      f32, _, data = tiny_artifact(tmp_path_factory, 'lstm_f32')
      config = copy.deepcopy(f32.config)
      config['model']['lstm']['dtype'] = 'bfloat16'
      model = registry.from_section(config['model'], vocab_size=f32.derived.vocab_size,
                                    num_classes=f32.derived.num_classes)
      run = dataclasses.replace(f32, config=config, model=model, fns=registry.model_fns(model))
    else:
      data = str(write_corpus(base / 'data'))
      overrides = dict(KINDS[kind])
      model = overrides.pop('model')
      config = tiny_config(data, model, **{'train.steps': 2, 'checkpoint.every_steps': 2,
                                           'train.log_every_steps': 2}, **overrides)
      training.run_training(config, str(base / 'run'))
      run = runs.load_run(str(base / 'run'))
    out = str(base / 'artifact')
    export.write_artifact(run, out)
    _CACHE[kind] = (run, out, data)
  return _CACHE[kind]


def assert_same_records(got: list, expected: list, atol: float = 1e-6):
  """Equal labels and probabilities within atol: other batch shapes may round the last bit differently."""
  assert len(got) == len(expected)
  for g, e in zip(got, expected):
    assert g['label'] == e['label'] and list(g['probabilities']) == list(e['probabilities'])
    np.testing.assert_allclose(list(g['probabilities'].values()), list(e['probabilities'].values()), atol=atol, rtol=0)


def corpus_texts(data: str, split: str = 'test') -> list:
  with open(os.path.join(data, f'{split}.txt'), encoding='utf-8') as f:
    return [line.rstrip('\n').split(' ', 1)[1] for line in f]


@pytest.mark.parametrize('kind', ['mlp', 'lstm_f32', 'lstm_bf16', 'lstm_backward'])
def test_artifact_probabilities_equal_the_checkpoints(tmp_path_factory, kind):
  run, out, data = tiny_artifact(tmp_path_factory, kind)
  artifact = loader.load(out)
  texts = corpus_texts(data) + EDGE_TEXTS
  # The loader encodes exactly as the run does (tokenizer, truncation side, max_len).
  assert all(np.array_equal(a, b) for a, b in zip(artifact.encode(texts), run.encode(texts)))
  reference = export.checkpoint_probabilities(run, texts, batch_size=16)  # Other batches, other padding.
  for batch_size in (8, 256):
    got = artifact.probabilities(texts, batch_size)
    assert got.shape == (len(texts), 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, atol=1e-6, rtol=0)
  assert [r['label'] for r in artifact.predict(texts)] == [run.label_names[i] for i in reference.argmax(1)]
  meta = artifact.metadata
  assert meta['input']['bucket_boundaries'] == run.derived.bucket_boundaries
  assert meta['labels'] == run.label_names and meta['config'] == run.config
  assert 'cpu' in meta['platforms']
  # One module for every batch size and width: both dimensions are symbolic.
  assert [str(a.shape) for a in artifact.exported.in_avals[-2:]] == ['(b, t)', '(b,)']
  if kind == 'lstm_backward':
    assert meta['input']['direction'] == 'backward'
    forward = run.tokenizer.encode(texts, run.config['data']['max_len'], run.config['data']['keep'])
    assert all(np.array_equal(a, b[::-1]) for a, b in zip(artifact.encode(texts), forward))
  if kind == 'lstm_bf16':  # The bf16 matmuls are in the exported program: it differs from the f32 one.
    f32 = loader.load(tiny_artifact(tmp_path_factory, 'lstm_f32')[1]).probabilities(texts)
    assert np.abs(f32 - reference).max() > 1e-6


def test_a_transformer_exports_with_a_symbolic_batch_and_width_up_to_its_position_table(
    tiny_transformer_run, tiny_transformer_artifact, tmp_path):
  workdir, data = tiny_transformer_run
  run, artifact = runs.load_run(workdir), loader.load(tiny_transformer_artifact)
  with open(os.path.join(tiny_transformer_artifact, loader.TREE_FILE), encoding='utf-8') as f:
    with np.load(os.path.join(tiny_transformer_artifact, loader.PARAMS_FILE)) as arrays:
      params = loader.params_from_tree(json.load(f), arrays)
  call = jax.jit(artifact.exported.call)
  model = jax.jit(lambda ids, lengths: jax.nn.softmax(run.model.apply({'params': run.params}, ids, lengths)))
  # One exported module at two batch sizes and two widths (the wider: max_positions) computes what
  # the model in JAX does.
  rng = np.random.default_rng(0)
  for rows, width in ((3, 8), (5, 16)):
    lengths = rng.integers(1, width + 1, rows).astype(np.int32)
    lengths[0] = width
    token_ids = np.where(np.arange(width)[None] < lengths[:, None], rng.integers(1, 60, (rows, width)), 0)
    np.testing.assert_allclose(call(params, token_ids.astype(np.int32), lengths), model(token_ids, lengths),
                               atol=1e-6, rtol=0, err_msg=f'{rows} x {width}')
  # Wider than its position table: refused when the shapes are refined (not NaN computed). A
  # deserialized module's error does not name the constraint; metadata.json's signature does. The
  # loader cuts texts to data.max_len, which the config check keeps within max_positions.
  with pytest.raises(ValueError, match='refining shapes'):
    call(params, np.ones((2, 24), np.int32), np.full(2, 24, np.int32))
  assert artifact.metadata['input']['max_tokens'] == 16 and 't <= 16' in artifact.metadata['signature']
  assert artifact.max_len == 16
  with pytest.raises(ConfigError, match='data.max_len=24 is more than model.transformer.max_positions=16'):
    checks.check_config(tiny_config(data, 'transformer', **{**TINY_TRANSFORMER, 'data.max_len': 24}))
  # The loader's texts (long ones cut) get the checkpoint's probabilities.
  texts = corpus_texts(data) + EDGE_TEXTS
  np.testing.assert_allclose(artifact.probabilities(texts, 8), export.checkpoint_probabilities(run, texts, 16),
                             atol=1e-6, rtol=0)
  # The model card names the Transformer and its configuration, and its width limit.
  card_folder = tmp_path / 'card'
  shutil.copytree(tiny_transformer_artifact, card_folder)
  card = model_card.write_card(str(card_folder), metadata=artifact.metadata, evaluation=None, training={},
                               language='English')
  card = open(card, encoding='utf-8').read()
  for needle in ('# Model card: transformer text classifier', 'BERT-style Transformer encoder', 'embedding width 16',
                 'num_heads 2', 'num_layers 1', 'intermediate_dim 32', 'max_positions 16', 'pooling mean',
                 "remat ''", 'cut to their first 16 tokens', 'refuses rows of more than 16 tokens'):
    assert needle in card, needle


def test_artifact_is_plain_data_and_damage_is_named(tmp_path_factory, tmp_path):
  _, out, _ = tiny_artifact(tmp_path_factory, 'mlp')
  assert sorted(os.listdir(out)) == sorted([loader.MODULE_FILE, loader.PARAMS_FILE, loader.TREE_FILE,
                                            loader.TOKENIZER_FILE, loader.METADATA_FILE, loader.LOADER_FILE])
  with np.load(os.path.join(out, loader.PARAMS_FILE), allow_pickle=False) as arrays:
    assert all(arrays[k].dtype.kind in 'fiu' for k in arrays.files)  # No object arrays: nothing to unpickle.
    assert 'embedding/embedding' in arrays.files
  # The loader shipped in the artifact is bigjax's, and it imports jax, numpy, tokenizers and the stdlib only.
  with open(os.path.join(out, loader.LOADER_FILE), encoding='utf-8') as f:
    source = f.read()
  assert source == open(loader.__file__, encoding='utf-8').read()
  imported = set(re.findall(r'^(?:import|from) (\w+)', source, re.M))
  assert imported <= {'argparse', 'hashlib', 'json', 'os', 'sys', 'typing', 'jax', 'numpy', 'tokenizers'}

  damaged = tmp_path / 'damaged'
  shutil.copytree(out, damaged)
  with open(damaged / loader.PARAMS_FILE, 'r+b') as f:
    f.seek(200)
    f.write(b'\x00\x01\x02')
  with pytest.raises(loader.ArtifactError, match='params.npz is damaged'):
    loader.load(str(damaged))
  os.remove(damaged / loader.TOKENIZER_FILE)
  with pytest.raises(loader.ArtifactError, match='incomplete: tokenizer.json is missing'):
    loader.load(str(damaged))
  meta = json.loads((damaged / loader.METADATA_FILE).read_text())
  (damaged / loader.METADATA_FILE).write_text(json.dumps({**meta, 'format_version': 99}))
  with pytest.raises(loader.ArtifactError, match='format version 99'):
    loader.load(str(damaged))
  with pytest.raises(loader.ArtifactError, match='not a model artifact'):
    loader.load(str(tmp_path))
  # An existing artifact is replaced only when asked; any other folder never.
  run = tiny_artifact(tmp_path_factory, 'mlp')[0]
  with pytest.raises(ConfigError, match='pass --overwrite'):
    export.write_artifact(run, out)
  with pytest.raises(ConfigError, match='not an artifact'):
    export.write_artifact(run, str(tmp_path))


def _bare_site(folder) -> str:
  """A folder of links to jax (with the dependencies its metadata requires), flatbuffers, numpy and
  tokenizers, and nothing else: no bigjax, no Flax."""
  wanted, todo = set(), ['jax', 'numpy', 'flatbuffers', 'tokenizers']
  while todo:
    name = todo.pop()
    if name in wanted:
      continue
    wanted.add(name)
    if name == 'tokenizers':
      continue  # Its huggingface-hub requirement is for downloading tokenizers, not for loading one from a file.
    for requirement in importlib.metadata.requires(name) or []:
      if 'extra ==' not in requirement:
        todo.append(re.split(r'[<>=!~; \[]', requirement, 1)[0].replace('-', '_').lower())
  os.makedirs(folder)
  for name in wanted:
    dist = importlib.metadata.distribution(name)
    tops = {str(f).split('/')[0] for f in dist.files if not str(f).startswith('..')}
    for top in tops - {t for t in tops if t.endswith('.dist-info') or t == '__pycache__'}:
      os.symlink(dist.locate_file(top), os.path.join(folder, top))
  assert not {'flax', 'bigjax', 'optax'} & {n.split('.')[0] for n in os.listdir(folder)}
  return str(folder)


def test_predict_py_runs_without_bigjax_or_flax(tmp_path_factory, tmp_path):
  """`python -I -S`: no site-packages, no PYTHONPATH, no current directory; sys.path is the standard
  library plus the bare site folder, so bigjax and Flax cannot be imported in that process."""
  _, out, data = tiny_artifact(tmp_path_factory, 'mlp')
  site = _bare_site(tmp_path / 'site')
  texts = corpus_texts(data)[:10] + ['', 'great']
  bootstrap = ('import runpy, sys\n'
               f'sys.path[:0] = [{site!r}]\n'
               f'sys.argv = [{os.path.join(out, "predict.py")!r}]\n'
               'try:\n'
               '  runpy.run_path(sys.argv[0], run_name="__main__")\n'
               'except SystemExit as e:\n'
               '  assert not e.code, e.code\n'
               'for name in ("flax", "bigjax"):\n'
               '  try:\n'
               '    __import__(name)\n'
               '    raise SystemExit(f"{name} is importable")\n'
               '  except ImportError:\n'
               '    pass\n'
               'print("loaded:", sorted({m.split(".")[0] for m in sys.modules}), file=sys.stderr)\n')
  result = subprocess.run([sys.executable, '-I', '-S', '-c', bootstrap], input='\n'.join(texts) + '\n',
                          capture_output=True, text=True, env={'JAX_PLATFORMS': 'cpu', 'PATH': os.environ['PATH']},
                          cwd=str(tmp_path), timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  loaded = result.stderr.split('loaded:')[1]
  assert 'jax' in loaded and 'flax' not in loaded and 'bigjax' not in loaded
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert_same_records(records, loader.load(out).predict(texts))


def test_export_cli_writes_the_model_card(tmp_path_factory, tmp_path):
  workdir = tiny_artifact(tmp_path_factory, 'mlp')[0].workdir
  out = tmp_path / 'card_artifact'
  result = subprocess.run([sys.executable, '-m', 'experiments.export', f'--workdir={workdir}', f'--out={out}'],
                          capture_output=True, text=True, cwd=ROOT, timeout=180, check=False,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads(result.stdout)
  assert summary['round_trip']['max_abs_diff'] <= 1e-5 and summary['round_trip']['same_labels']
  results = json.load(open(os.path.join(workdir, 'results.json'), encoding='utf-8'))
  assert summary['test']['accuracy'] == pytest.approx(results['test']['accuracy'])  # The run's own test split.
  card = (out / model_card.CARD_FILE).read_text()
  for needle in ('## Intended use', '## Training data', '## Evaluation data', '## Ethical considerations',
                 '| test accuracy |', '| test macro-F1 |', '| F1 of class 0 |', '| F1 of class 1 |',
                 'expected calibration error (15 equal-width bins)', 'reliability.png', 'Compression: none',
                 'cut to their last 12 tokens', 'train 240, dev 40, test 40 examples'):
    assert needle in card, needle
  assert (out / model_card.DIAGRAM_FILE).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  meta = json.loads((out / loader.METADATA_FILE).read_text())
  assert meta['evaluation']['ece_bins'] == 15 and 0 <= meta['evaluation']['ece'] <= 1


def test_calibration_error():
  # Two bins of two examples: confidences 0.9 (both right) and 0.6 (one right).
  probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
  labels = np.array([0, 1, 0, 0])
  calib = model_card.calibration(probabilities, labels, bins=10)
  assert calib['ece'] == pytest.approx(0.5 * abs(1.0 - 0.9) + 0.5 * abs(0.5 - 0.6))
  assert [r['count'] for r in calib['table']] == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
  perfect = model_card.calibration(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]), bins=15)
  assert perfect['ece'] == 0.0 and perfect['table'][-1]['count'] == 2  # 1.0 falls in the last bin.


def test_predict_streams_in_order(tmp_path_factory, tmp_path):
  _, out, data = tiny_artifact(tmp_path_factory, 'mlp')
  artifact = loader.load(out)
  texts = corpus_texts(data)[:7] + ['', 'great film']
  expected = artifact.predict(texts)
  # experiments.predict: JSON lines on stdin, chunks of 2 texts in batches of 2, records in input order.
  jsonl = ''.join(json.dumps({'text': t, 'id': i}) + '\n' for i, t in enumerate(texts))
  result = subprocess.run([sys.executable, '-m', 'experiments.predict', f'--model={out}', '--chunk=2',
                           '--batch_size=2'], input=jsonl, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-2000:]
  assert_same_records([json.loads(line) for line in result.stdout.splitlines()], expected)
  assert 'texts' in result.stderr  # The progress bar.
  # One text per line, blank lines included (output line i is input line i); JSON strings; bad lines named.
  lines = '\n'.join(texts).encode() + b'\n'
  written = []
  assert loader.predict_stream(artifact, loader.read_texts(lines.splitlines(True)), written.append, chunk=3) == 9
  assert_same_records([json.loads(w) for w in written], expected)
  assert list(loader.read_texts([b'"a"\n', b'\n', b'{"review": "b"}\n'], 'jsonl', 'review')) == ['a', 'b']
  with pytest.raises(loader.InputError, match='line 2: not JSON'):
    list(loader.read_texts([b'{"text": "a"}\n', b'{oops\n']))
  with pytest.raises(loader.InputError, match='line 1: byte ff'):
    list(loader.read_texts([b'\xff\n']))


def test_run_probabilities_are_in_text_order_and_an_ensemble_averages_its_members(tmp_path_factory, tmp_path):
  forward, _, data = tiny_artifact(tmp_path_factory, 'lstm_f32')
  backward, _, _ = tiny_artifact(tmp_path_factory, 'lstm_backward')
  texts = corpus_texts(data) + EDGE_TEXTS
  labels = [int(line.split(' ', 1)[0]) for line in open(os.path.join(data, 'test.txt'), encoding='utf-8')]
  labels += [0] * len(EDGE_TEXTS)
  each = [run.probabilities(texts, batch_size=8) for run in (forward, backward)]
  for run, got in zip((forward, backward), each):  # Length-sorted batches, put back in text order.
    np.testing.assert_allclose(got, export.checkpoint_probabilities(run, texts, batch_size=16), atol=1e-6, rtol=0)
    own = run.evaluate(texts, labels)
    single = runs.probabilities_report(got, labels)
    assert single['confusion'] == own['confusion']
    np.testing.assert_allclose(single['loss'], own['loss'], rtol=1e-5)
  assert np.abs(each[0] - each[1]).max() > 1e-3  # Two different models: the average is not either one.
  report = runs.ensemble_report([forward, backward], texts, labels, batch_size=8)
  mean = (each[0] + each[1]) / 2
  assert report['accuracy'] == np.mean(mean.argmax(1) == np.asarray(labels))
  np.testing.assert_allclose(report['loss'], -np.mean(np.log(mean[np.arange(len(labels)), labels])), rtol=1e-5)
  assert [m['accuracy'] for m in report['members']] == [np.mean(p.argmax(1) == np.asarray(labels)) for p in each]
  # The entry point: several --workdir values are their ensemble.
  out = run_module('experiments.evaluate', [f'--workdir={forward.workdir},{backward.workdir}',
                                            f'--data={os.path.join(data, "test.txt")}', f'--json_out={tmp_path / "r.json"}'])
  assert out.returncode == 0, out.stderr[-2000:]
  cli = json.load(open(tmp_path / 'r.json', encoding='utf-8'))
  test_only = runs.ensemble_report([forward, backward], texts[:-len(EDGE_TEXTS)], labels[:-len(EDGE_TEXTS)])
  assert cli['confusion'] == test_only['confusion'] and len(cli['members']) == 2


def test_an_ensemble_of_runs_with_other_labels_is_refused(tmp_path_factory):
  forward, _, data = tiny_artifact(tmp_path_factory, 'lstm_f32')
  relabelled = dataclasses.replace(forward, derived=dataclasses.replace(forward.derived, label_names=['neg', 'pos']))
  with pytest.raises(ConfigError, match='different labels'):
    runs.ensemble_report([forward, relabelled], corpus_texts(data), [0] * 40)
