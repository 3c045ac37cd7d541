"""Word-vector pretraining: what the vectors learn, how they start a classifier or a language model, bad input."""
import jax
import numpy as np
import pytest

from bigjax import experiment
from bigjax import training
from bigjax import transfer
from bigjax.config import checks
from bigjax.errors import ConfigError
from bigjax.pretrain import embeddings
from bigjax.train import step as step_lib
from bigjax.pretrain import word_vectors
from test_train import tiny_config, write_corpus


def test_words_in_the_same_contexts_get_similar_vectors():
  # Ids 5 and 6 occur among context words 10..14, id 7 among 15..19; 0 and 1 are skipped.
  rng = np.random.default_rng(0)
  rows = []
  for _ in range(3000):
    word = int(rng.choice([5, 6, 7]))
    context = rng.integers(10, 15, 6) if word != 7 else rng.integers(15, 20, 6)
    rows.append(np.concatenate([context[:3], [word, 0, 1], context[3:]]).astype(np.int32))
  vectors, found, stats = embeddings.train_word_vectors(rows, 20, dim=8, window=2, epochs=3, min_count=1,
                                                        workers=1, skip_ids=[0, 1])
  assert not found[[0, 1, 2, 3, 4, 8, 9]].any() and found[[5, 6, 7, 10, 19]].all()
  assert stats['corpus_tokens'] == 3000 * 7
  unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
  assert unit[5] @ unit[6] > unit[5] @ unit[7] + 0.3


def test_pretraining_reads_train_and_unlabelled_text_only(tmp_path):
  config = tiny_config(write_corpus(tmp_path / 'data', sizes=(60, 20, 20)))
  texts, dataset = word_vectors.corpus_texts(config)
  assert texts == dataset.splits['train'].texts
  config.pretrain.corpus_path = str(write_corpus(tmp_path / 'more', sizes=(30, 5, 5), seed=1))
  texts, _ = word_vectors.corpus_texts(config)
  assert len(texts) == 60 + 30


def test_pretrained_vectors_start_the_embedding_table(tmp_path):
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, **{'pretrain.min_count': 1, 'train.steps': 4})
  stats = word_vectors.pretrain_from_config(config, str(tmp_path / 'w2v'))
  tokenizer, vectors, found = embeddings.load(str(tmp_path / 'w2v'))
  assert stats['vectors_found'] == found.sum() > 20
  assert not found[embeddings.special_ids(tokenizer)].any()

  config.init.embeddings = str(tmp_path / 'w2v')
  claimed = training.claim_workdir(config, str(tmp_path / 'run'))
  exp = experiment.build_experiment(config, claimed)
  assert exp.tokenizer.vocab_size == tokenizer.vocab_size
  assert (tmp_path / 'run' / 'tokenizer.json').read_text() == (tmp_path / 'w2v' / 'tokenizer.json').read_text()
  table = np.asarray(exp.init_state().params['embedding']['embedding'])
  scratch = np.asarray(step_lib.create_train_state(exp.fns, exp.tx, jax.random.PRNGKey(config.seed),
                                                  exp.train_batches.batch(0)).params['embedding']['embedding'])
  ratio = table[found] / vectors[found]
  np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)  # The vectors, rescaled as one.
  np.testing.assert_allclose(table.std(), scratch.std(), rtol=0.2)
  np.testing.assert_array_equal(table[~found], scratch[~found])

  results = training.run_training(config, str(tmp_path / 'run'))
  assert results['step'] == 4


def test_bad_pretrained_embeddings_get_one_clear_error(tmp_path):
  config = tiny_config(write_corpus(tmp_path / 'data'), **{'pretrain.min_count': 1})
  config.init.embeddings = str(tmp_path / 'nothing_here')
  with pytest.raises(ConfigError, match='no embeddings.npz there; write one with python -m '
                                        'experiments.pretrain_embeddings'):
    checks.check_config(config)
  word_vectors.pretrain_from_config(config, str(tmp_path / 'w2v'))
  config.init.embeddings = str(tmp_path / 'w2v')
  config.model.embed_dim = 24
  with pytest.raises(ConfigError, match=r'the model\'s embedding table \d+x24: set model.embed_dim=16'):
    training.run_training(config, str(tmp_path / 'run'))
  config.pretrain.window = 0
  with pytest.raises(ConfigError, match='pretrain.window=0 must be >= 1'):
    checks.check_config(config)


def test_a_language_model_starts_from_word_vectors_and_keeps_their_tokenizer(tmp_path):
  from test_language_model import lm_config, write_reviews  # pylint: disable=g-import-not-at-top
  config = lm_config(write_reviews(str(tmp_path / 'data')), **{'pretrain.min_count': 1, 'train.steps': 4,
                                                               'checkpoint.every_steps': 2})
  word_vectors.pretrain_from_config(config, str(tmp_path / 'w2v'))  # The language model's own config.
  tokenizer, vectors, found = embeddings.load(str(tmp_path / 'w2v'))
  assert found.sum() > 10 and not found[embeddings.special_ids(tokenizer)].any()

  config.init.embeddings = str(tmp_path / 'w2v')
  claimed = training.claim_workdir(config, str(tmp_path / 'lm'))
  exp = experiment.build_lm_experiment(config, claimed)
  assert (tmp_path / 'lm' / 'tokenizer.json').read_text() == (tmp_path / 'w2v' / 'tokenizer.json').read_text()
  assert exp.tokenizer.vocab_size == tokenizer.vocab_size
  start = jax.tree.map(np.asarray, exp.init_state().params)
  scratch = jax.tree.map(np.asarray, step_lib.create_train_state(
      exp.fns, exp.tx, jax.random.PRNGKey(config.seed), exp.train_batches.batch(0),
      carry_rows=config.train.batch_size).params)
  table = start['embedding']['embedding']  # Tied: the output layer's rows too.
  ratio = table[found] / vectors[found]
  np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
  np.testing.assert_array_equal(table[~found], scratch['embedding']['embedding'][~found])
  fresh = transfer.leaf_paths(scratch)
  for path, value in transfer.leaf_paths(start).items():  # Only the table differs from a fresh model.
    if path != 'embedding/embedding':
      np.testing.assert_array_equal(value, fresh[path])

  results = training.run_training(config, str(tmp_path / 'lm'), build=experiment.build_lm_experiment)
  assert results['step'] == 4 and np.isfinite(results['dev']['perplexity'])
