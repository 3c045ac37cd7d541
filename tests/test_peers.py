"""Racing the PyTorch peers: the peer's data is bigjax's tokens, the test curve, the recipe check."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import peers
from bigjax import errors
from bigjax import experiment
from bigjax import training
from bigjax.data import from_config
from bigjax.pretrain import embeddings
from bigjax.pretrain import word_vectors
from tests.entry_points import run_module
from tests.test_train import tiny_config, write_corpus


def read_peer_split(path):
  """What torch_lstm.read_split does: 'LABEL tok tok ...' -> (labels, token lists)."""
  with open(path, encoding='utf-8') as f:
    lines = [line.split() for line in f]
  return [int(parts[0]) for parts in lines], [parts[1:] for parts in lines]


def test_peer_data_holds_the_token_sequences_bigjax_trains_on(tmp_path):
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, 'lstm', **{'data.vocab_size': 15, 'data.max_len': 6, 'data.keep': 'last',
                                        'data.tokenizer': 'wordpunct', 'data.min_frequency': 3})
  info = peers.write_peer_data(config, str(tmp_path / 'peer'))
  assert 'init_table' not in info  # From scratch: each side initializes its own way.
  dataset = from_config.load_data(config.data, config.seed)
  exp = experiment.build_experiment(config, workdir=None)
  unk_seen = False
  for name in ('train', 'dev', 'test'):
    labels, token_lists = read_peer_split(tmp_path / 'peer' / f'{name}.txt')
    split = dataset.splits[name]
    assert labels == [int(x) for x in split.labels]
    rows = exp.tokenizer.encode(split.texts, config.data.max_len, 'last')
    for tokens, row in zip(token_lists, rows):
      assert [exp.tokenizer.token_id(t) for t in tokens] == row.tolist()  # The last 6 ids, exactly.
      unk_seen |= '<unk>' in tokens
  assert unk_seen  # A 15-entry vocabulary leaves words out: they reach the peer as <unk>.


def test_peer_gets_the_pretrained_starting_table(tmp_path):
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, 'lstm', **{'pretrain.min_count': 1})
  word_vectors.pretrain_from_config(config, str(tmp_path / 'w2v'))
  config.init.embeddings = str(tmp_path / 'w2v')
  info = peers.write_peer_data(config, str(tmp_path / 'peer'))
  with np.load(info['init_table']) as saved:
    tokens, table = saved['tokens'].tolist(), saved['table']
  tokenizer, _, found = embeddings.load(str(tmp_path / 'w2v'))
  assert tokens == tokenizer.tokens(range(tokenizer.vocab_size))
  start = np.asarray(experiment.build_experiment(config, None).init_state().params['embedding']['embedding'])
  np.testing.assert_array_equal(table, start)  # Row for row the table bigjax's run starts from.
  assert found.sum() > 20


def test_test_curve_at_each_checkpoint_in_metrics(tmp_path):
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, 'lstm', **{'train.steps': 15, 'train.test_at_checkpoints': True,
                                        'data.max_len': 16, 'data.smallest_bucket': 16})
  results = training.run_training(config, str(tmp_path / 'run'))
  curve = peers.BigjaxCurve(str(tmp_path / 'run')).poll()  # What time_to_accuracy races on.
  assert [point['step'] for point in curve] == [5, 10, 15]
  best = next(point for point in curve if point['step'] == results['best_step'])
  # The curve's test accuracy at the best-dev step is the one the run reports at the end.
  assert best['test_acc'] == pytest.approx(results['test']['accuracy'], abs=1e-12)
  assert best['dev_acc'] == pytest.approx(results['dev']['accuracy'], abs=1e-12)


def test_a_recipe_the_peer_cannot_follow_is_refused(tmp_path):
  config = tiny_config(tmp_path, 'lstm', **{'model.lstm.bidirectional': True, 'optim.schedule': 'cosine'})
  with pytest.raises(errors.ConfigError, match=r'model\.lstm\.bidirectional=True.*optim\.schedule=.cosine'):
    peers.check_recipe(config)
  peers.check_recipe(tiny_config(tmp_path, 'lstm', **{'train.steps': 0, 'checkpoint.every_steps': 0}))


def test_peer_command_carries_the_recipe(tmp_path):
  config = tiny_config(tmp_path, 'lstm', **{'model.lstm.forget_bias': 1.0, 'optim.clip_norm': 0.5,
                                            'optim.learning_rate': 2e-3, 'train.epochs': 7})
  command = peers.lstm_command(config, 'python', '/peers', '/data', '/t.npz', '/out.json')
  assert os.path.basename(command[1]) == 'torch_peer_recipe.py' and os.path.exists(command[1])
  for flag in ('--forget_bias=1.0', '--clip_norm=0.5', '--lr=0.002', '--epochs=7', '--embed_dim=16',
               '--hidden_dim=16', '--dropout=0.3', '--batch_size=16', '--init_table=/t.npz', '--threads=2'):
    assert flag in command, flag


@pytest.mark.parametrize('args, expected', [
    (['--config=experiments/configs/mlp_sst2.py'], "model.name='mlp' (needs 'lstm')"),
    (['--config=experiments/configs/lstm_sst2.py'], "model.lstm.dtype='bfloat16' (needs 'float32')"),
    (['--config=experiments/configs/lstm_imdb.py', '--sides=bigjax,jax'], "--sides: ['jax'] unknown"),
    (['--config=experiments/configs/lstm_imdb.py', '--sides=bigjax'], 'holds an earlier race'),
])
def test_race_refusals_are_one_line(tmp_path, args, expected):
  (tmp_path / 'race' / 'bigjax').mkdir(parents=True)  # As an earlier race leaves it: bigjax would resume.
  done = run_module('benchmarks.time_to_accuracy', [f'--workdir={tmp_path / "race"}', *args], timeout=120,
                    cwd=peers.ROOT)
  assert done.returncode == 2, done.stderr[-2000:]
  assert expected in done.stderr and 'Traceback' not in done.stderr


def test_fasttext_imdb_peer_splits_and_tokenizes_as_bigjax(tmp_path):
  """benchmarks/fasttext_imdb.py reads the archive itself: it must get bigjax's 22,500 / 2,500 split."""
  import io  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top
  from tokenizers import pre_tokenizers  # pylint: disable=g-import-not-at-top
  from bigjax.data import sources  # pylint: disable=g-import-not-at-top
  from benchmarks import fasttext_imdb  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  path = tmp_path / 'aclImdb_v1.tar.gz'
  with tarfile.open(path, 'w:gz') as tar:
    for split, count in (('train', 60), ('test', 10)):
      for i in range(count):
        label = ('neg', 'pos')[int(rng.integers(2))]
        data = f'review {split} {i}<br />is {label}, really!'.encode()
        info = tarfile.TarInfo(f'aclImdb/{split}/{label}/{i}_{rng.integers(1, 11)}.txt')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  ours = sources.load_text_dataset(path=str(path), dev_fraction=0.1, seed=0)
  theirs = fasttext_imdb.read_archive(str(path))
  train, dev = fasttext_imdb.carve_dev(theirs['train'])
  for name, rows in (('train', train), ('dev', dev), ('test', theirs['test'])):
    assert [text for _, _, text in rows] == ours.splits[name].texts
    assert [label for _, label, _ in rows] == ours.splits[name].labels.tolist()
  text = "It's a must-see... 10/10 (really)!"
  assert fasttext_imdb.TOKEN.findall(text) == [w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]


def test_the_torch_language_model_peer_computes_bigjax_s_sampled_logits_and_state():
  """benchmarks/torch_peer_lm.py is the same model as bigjax's lstm_lm: given bigjax's weights,
  its sampled logits and carried state over two windows are bigjax's (dropout off)."""
  torch = pytest.importorskip('torch', reason='torch is not installed here (pip install -e ".[peers]")')
  import jax  # pylint: disable=import-outside-toplevel
  from bigjax.models import registry  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_peer_lm  # pylint: disable=import-outside-toplevel
  vocab, embed, hidden = 40, 8, 6
  section = {'name': 'lstm_lm', 'embed_dim': embed, 'dropout': 0.0,
             'lstm': {'hidden_dim': hidden, 'num_layers': 1, 'forget_bias': 1.0, 'tie_embeddings': True,
                      'token_dropout': 0.0, 'dtype': 'float32'}}
  fns = registry.model_fns(registry.from_section(section, vocab_size=vocab, num_classes=0))
  rng = np.random.default_rng(0)
  rows = rng.integers(0, vocab, (3, 11)).astype(np.int32)
  params = fns.init(jax.random.PRNGKey(0), rows[:, :5], np.full(3, 5, np.int32))
  params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32), params)  # Biases too.
  p = jax.device_get(params)
  layer = p['layers_0_0']
  model = torch_peer_lm.LanguageModel(vocab, embed, hidden, dropout=0.0, token_dropout=0.0)
  with torch.no_grad():  # torch's gate order is bigjax's (i, f, g, o); its two biases sum.
    model.embedding.weight.copy_(torch.from_numpy(np.array(p['embedding']['embedding'])))
    model.lstm.weight_ih_l0.copy_(torch.from_numpy(np.asarray(layer['kernel_i']).T.copy()))
    model.lstm.weight_hh_l0.copy_(torch.from_numpy(np.asarray(layer['kernel_h']).T.copy()))
    model.lstm.bias_ih_l0.copy_(torch.from_numpy(np.array(layer['bias'])))
    model.lstm.bias_hh_l0.zero_()
    model.projection.weight.copy_(torch.from_numpy(np.array(p['lm_projection']['kernel']).T.copy()))
    model.projection.bias.copy_(torch.from_numpy(np.array(p['lm_projection']['bias'])))
    model.bias.copy_(torch.from_numpy(np.array(p['lm_bias'])))
  model.eval()
  negatives = np.array([3, 17, 0, 39, 17], np.int32)
  carry, state = fns.initial_carry(3), None
  for start in (0, 5):  # Two windows, the state carried from the first into the second.
    inputs, targets = rows[:, start:start + 5], rows[:, start + 1:start + 6]
    ours, carry = fns.token_logits_carried(params, inputs, np.full(3, 5, np.int32), carry, None, targets, negatives)
    with torch.no_grad():
      theirs, state = model(torch.from_numpy(inputs.astype(np.int64)), state,
                            torch.from_numpy(targets.astype(np.int64)), torch.from_numpy(negatives.astype(np.int64)))
    np.testing.assert_allclose(theirs.numpy().reshape(3, 5, -1), np.asarray(ours), rtol=1e-4, atol=1e-5)
    (c, h), = carry
    np.testing.assert_allclose(state[0][0].numpy(), np.asarray(h), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state[1][0].numpy(), np.asarray(c), rtol=1e-4, atol=1e-5)


def test_the_torch_language_model_peer_trains_on_bigjax_s_windows(tmp_path):
  pytest.importorskip('torch', reason='torch is not installed here (pip install -e ".[peers]")')
  from tests.test_language_model import lm_config, write_reviews  # pylint: disable=import-outside-toplevel
  config = lm_config(write_reviews(str(tmp_path / 'data')), **{'lm.window': 8, 'train.batch_size': 4,
                                                                'lm.negatives': 16})
  stream = str(tmp_path / 'stream.npz')
  info = peers.write_lm_peer_data(config, stream, steps=30)
  exp = experiment.build_lm_experiment(config, workdir=None)
  with np.load(stream) as saved:
    rows, log_q = saved['rows'], saved['log_q']
  for step in (0, 29):  # The peer's windows are bigjax's, step for step.
    batch = exp.train_batches.batch(step)
    np.testing.assert_array_equal(rows[:, step * 8:(step + 1) * 8], batch.token_ids)
    np.testing.assert_array_equal(rows[:, step * 8 + 1:(step + 1) * 8 + 1], batch.targets)
  np.testing.assert_allclose(np.exp(log_q).sum(), 1.0, rtol=1e-5)
  assert info == {'rows': 4, 'window': 8, 'vocab_size': len(log_q), 'negatives': 16}
  out = subprocess.run([sys.executable, os.path.join(peers.ROOT, 'benchmarks', 'torch_peer_lm.py'), f'--stream={stream}',
                        '--embed_dim=16', '--hidden_dim=16', '--window=8', '--negatives=16', '--steps=30',
                        '--warmup_steps=2', '--lr=1e-2', '--threads=1', f'--json_out={tmp_path / "peer.json"}'],
                       capture_output=True, text=True, check=True)
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report['timed_steps'] == 28 and report['train_tokens_per_s'] > 0
  assert report['last_loss'] < report['first_loss'] - 0.3, report  # It learns.
