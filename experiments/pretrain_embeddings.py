"""Pretrains word vectors for a classifier config: the first stage of pretrain -> finetune.

  python -m experiments.pretrain_embeddings --config=experiments/configs/lstm_imdb.py --workdir=runs/w2v_imdb
  python -m experiments.train --config=experiments/configs/lstm_imdb.py --workdir=runs/lstm_imdb \
      --config.init.embeddings=runs/w2v_imdb

Trains the tokenizer the classifier would train (same config), encodes the corpus with it
(the train split, the unlabelled split if there is one, and pretrain.corpus_path's text;
never dev or test), learns skip-gram vectors for its ids, and writes tokenizer.json,
embeddings.npz and pretrain.json to --workdir. A finished workdir is reused as is.
"""
import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bigjax import errors
from bigjax import logs
from bigjax import workdirs
from bigjax.config import checks
from bigjax.data import from_config
from bigjax.data import prepare, sources
from bigjax.pretrain import embeddings
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Classifier config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for the tokenizer and the vectors.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def corpus_texts(config) -> tuple[list[str], sources.TextDataset]:
  """Text to learn from (train and unlabelled splits only: never dev or test), and the classifier's data."""
  dataset = from_config.load_data(config.data, config.seed)
  datasets = [dataset]
  if config.pretrain.corpus_path:
    datasets.append(sources.load_text_dataset(path=config.pretrain.corpus_path,
                                              encoding=config.pretrain.corpus_encoding, seed=config.seed))
  texts = [text for d in datasets for split in ('train', 'unlabeled') if split in d.splits
           for text in d.splits[split].texts]
  return texts, dataset


def pretrain(config, workdir: str) -> dict:
  workdirs.check_apart(workdir, {'data.path': config.data.path, 'pretrain.corpus_path': config.pretrain.corpus_path})
  workdir = workdirs.claim(workdir, 'experiments.pretrain_embeddings')
  if os.path.exists(os.path.join(workdir, embeddings.FILENAME)):
    logging.info('%s already holds %s; nothing to do', workdir, embeddings.FILENAME)
    return {}
  start = time.perf_counter()
  texts, dataset = corpus_texts(config)
  tokenizer = prepare.run_tokenizer(workdir, dataset.splits['train'].texts, from_config.tokenizer_trainer(config.data))
  rows = tokenizer.encode(texts, max_len=1 << 30)  # Whole texts: data.max_len is the classifier's limit.
  logging.info('corpus: %d texts, %d tokens; training %d-dim skip-gram vectors for %d ids',
               len(texts), sum(map(len, rows)), config.model.embed_dim, tokenizer.vocab_size)
  p = config.pretrain
  vectors, found, stats = embeddings.train_word_vectors(
      rows, tokenizer.vocab_size, dim=config.model.embed_dim, window=p.window, negative=p.negative, epochs=p.epochs,
      min_count=p.min_count, seed=config.seed, skip_ids=embeddings.special_ids(tokenizer))
  stats['total_s'] = round(time.perf_counter() - start, 1)
  embeddings.save(workdir, tokenizer, vectors, found, {'stats': stats, 'config': config.to_dict()})
  logging.info('wrote %s: vectors for %d of %d ids in %s s', os.path.join(workdir, embeddings.FILENAME),
               stats['vectors_found'], tokenizer.vocab_size, stats['total_s'])
  return stats


def main(argv):
  logging.set_verbosity(logging.INFO)
  logs.quiet_library_logs(_VERBOSE.value)

  def run():
    if len(argv) > 1:
      raise errors.ConfigError(f'unexpected arguments {argv[1:]}; flags are written --name=value')
    checks.check_config(_CONFIG.value)
    return pretrain(_CONFIG.value, _WORKDIR.value)

  errors.exit_on_user_error(run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=cli.parse_flags)
