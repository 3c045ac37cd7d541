"""Racing the PyTorch peers: the peer's data is bigjax's tokens, the test curve, the recipe check."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bigjax.pretrain import embeddings
from experiments import common, peers, pretrain_embeddings
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
  dataset = common.load_data(config.data, config.seed)
  exp = common.build_experiment(config, workdir=None)
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
  pretrain_embeddings.pretrain(config, str(tmp_path / 'w2v'))
  config.init.embeddings = str(tmp_path / 'w2v')
  info = peers.write_peer_data(config, str(tmp_path / 'peer'))
  with np.load(info['init_table']) as saved:
    tokens, table = saved['tokens'].tolist(), saved['table']
  tokenizer, _, found = embeddings.load(str(tmp_path / 'w2v'))
  assert tokens == tokenizer.tokens(range(tokenizer.vocab_size))
  start = np.asarray(common.build_experiment(config, None).init_state().params['embedding']['embedding'])
  np.testing.assert_array_equal(table, start)  # Row for row the table bigjax's run starts from.
  assert found.sum() > 20


def test_test_curve_at_each_checkpoint_in_metrics(tmp_path):
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, 'lstm', **{'train.steps': 15, 'train.test_at_checkpoints': True,
                                        'data.max_len': 16, 'data.smallest_bucket': 16})
  results = common.run_training(config, str(tmp_path / 'run'))
  curve = peers.BigjaxCurve(str(tmp_path / 'run')).poll()  # What time_to_accuracy races on.
  assert [point['step'] for point in curve] == [5, 10, 15]
  best = next(point for point in curve if point['step'] == results['best_step'])
  # The curve's test accuracy at the best-dev step is the one the run reports at the end.
  assert best['test_acc'] == pytest.approx(results['test']['accuracy'], abs=1e-12)
  assert best['dev_acc'] == pytest.approx(results['dev']['accuracy'], abs=1e-12)


def test_a_recipe_the_peer_cannot_follow_is_refused(tmp_path):
  config = tiny_config(tmp_path, 'lstm', **{'model.lstm.bidirectional': True, 'optim.schedule': 'cosine'})
  with pytest.raises(common.ConfigError, match=r'model\.lstm\.bidirectional=True.*optim\.schedule=.cosine'):
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
  done = subprocess.run([sys.executable, '-m', 'experiments.time_to_accuracy', f'--workdir={tmp_path / "race"}',
                         *args], cwd=peers.ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2, done.stderr[-2000:]
  assert expected in done.stderr and 'Traceback' not in done.stderr


def test_fasttext_imdb_peer_splits_and_tokenizes_as_bigjax(tmp_path):
  """experiments/fasttext_imdb.py reads the archive itself: it must get bigjax's 22,500 / 2,500 split."""
  import io  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top
  from tokenizers import pre_tokenizers  # pylint: disable=g-import-not-at-top
  from bigjax.data import sources  # pylint: disable=g-import-not-at-top
  from experiments import fasttext_imdb  # pylint: disable=g-import-not-at-top
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
