"""Word vectors for a classifier config: the first stage of pretrain -> finetune.

Trains the tokenizer the classifier would train (same config), encodes the corpus with it
(the train split, the unlabelled split if there is one, and pretrain.corpus_path's text;
never dev or test), learns skip-gram vectors for its ids (bigjax.pretrain.embeddings), and
writes tokenizer.json, embeddings.npz and pretrain.json to the folder.
"""
import logging
import os
import time

import ml_collections

from bigjax import workdirs
from bigjax.data import from_config, prepare, sources
from bigjax.pretrain import embeddings


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


def pretrain_from_config(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Word vectors for a classifier config's vocabulary, written to workdir (a finished one is kept)."""
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
