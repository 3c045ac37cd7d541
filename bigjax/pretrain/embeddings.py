"""Word vectors pretrained on raw text (word2vec), to start a classifier's embedding table.

The first stage of pretrain -> finetune: skip-gram with negative sampling (Mikolov et al.
2013) over a corpus encoded with the classifier's own tokenizer, so every vector lines up
with a row of the classifier's table. Word2vec itself is gensim's (optimized C,
multithreaded); this module only feeds it token ids and writes the result next to the
tokenizer, in a folder a training run names with `init.embeddings`.
"""
import json
import os
import tempfile
import time
from typing import Sequence

import numpy as np

from bigjax.data.tokenizer import SPECIAL_TOKENS, Tokenizer
from bigjax.errors import ConfigError

FILENAME = 'embeddings.npz'


def train_word_vectors(rows: Sequence[np.ndarray], vocab_size: int, *, dim: int, window: int = 5,
                       negative: int = 5, epochs: int = 5, min_count: int = 3, seed: int = 0,
                       workers: int = 0, skip_ids: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, dict]:
  """Skip-gram vectors for token ids.

  rows: token ids per text. Ids in `skip_ids` (padding, <unk>) are dropped from the text
  first, so they neither get a vector nor act as context.
  Returns (vectors float32[vocab_size, dim], found bool[vocab_size], stats); rows of ids
  seen fewer than `min_count` times are zero and not found.
  """
  import gensim  # Imported here: only pretraining needs it.
  from gensim.models import Word2Vec

  skip = np.asarray(sorted(set(skip_ids)), np.int64)
  tokens = 0
  with tempfile.TemporaryDirectory() as tmp:
    # gensim's corpus_file mode reads one space-separated text per line and scales over
    # threads far better than Python iterables.
    corpus = os.path.join(tmp, 'corpus.txt')
    with open(corpus, 'w') as f:
      for ids in rows:
        ids = ids[~np.isin(ids, skip)] if len(skip) else ids
        if len(ids):
          f.write(' '.join(map(str, ids.tolist())))
          f.write('\n')
          tokens += len(ids)
    if not tokens:
      raise ConfigError('pretraining corpus is empty after tokenization')
    start = time.perf_counter()
    model = Word2Vec(corpus_file=corpus, vector_size=dim, window=window, negative=negative, sg=1,
                     min_count=min_count, epochs=epochs, seed=seed, workers=workers or os.cpu_count() or 1)
    seconds = time.perf_counter() - start
  vectors = np.zeros((vocab_size, dim), np.float32)
  found = np.zeros(vocab_size, bool)
  for word, index in model.wv.key_to_index.items():
    vectors[int(word)] = model.wv.vectors[index]
    found[int(word)] = True
  stats = {'corpus_texts': len(rows), 'corpus_tokens': tokens, 'vocab_size': vocab_size,
           'vectors_found': int(found.sum()), 'train_s': round(seconds, 1),
           'gensim': gensim.__version__}
  return vectors, found, stats


def save(directory: str, tokenizer: Tokenizer, vectors: np.ndarray, found: np.ndarray, info: dict) -> None:
  tokenizer.save(directory)
  path = os.path.join(directory, FILENAME)
  with open(path + '.tmp', 'wb') as f:  # Written whole, then renamed: no half files.
    np.savez(f, vectors=vectors, found=found)
  os.replace(path + '.tmp', path)
  with open(os.path.join(directory, 'pretrain.json'), 'w') as f:
    json.dump(info, f, indent=1)


def check_exists(directory: str) -> str:
  """The vectors' path in `directory`; an error saying how to write them if they are missing."""
  path = os.path.join(directory, FILENAME)
  if not os.path.exists(path):
    raise ConfigError(f'init.embeddings={directory!r}: no {FILENAME} there; write one with '
                      'python -m experiments.pretrain_embeddings --config=... --workdir=' + directory)
  return path


def load(directory: str) -> tuple[Tokenizer, np.ndarray, np.ndarray]:
  """(tokenizer, vectors, found) from a folder written by `save`."""
  path = check_exists(directory)
  tokenizer = Tokenizer.load(directory, remedy='the file is damaged: copy the folder again, or write it again with '
                             'python -m experiments.pretrain_embeddings')
  with np.load(path) as saved:
    vectors, found = saved['vectors'], saved['found']
  if vectors.shape[0] != tokenizer.vocab_size or found.shape != (tokenizer.vocab_size,):
    raise ConfigError(f'{path}: {vectors.shape[0]} vectors for a tokenizer of {tokenizer.vocab_size} ids')
  return tokenizer, vectors, found


def special_ids(tokenizer: Tokenizer) -> list[int]:
  """Ids that are not words of the text: padding, <unk> and the other special tokens."""
  return sorted({tokenizer.token_id(token) for token in SPECIAL_TOKENS} - {None})


def init_embedding_table(table: np.ndarray, vectors: np.ndarray, found: np.ndarray) -> np.ndarray:
  """The table with pretrained rows put in, rescaled to the table's own standard deviation.

  Word2vec vectors are small (std ~0.1-0.3); the model's layers are initialized for inputs
  of its own embedding scale, so the pretrained rows are brought to it. Rows without a
  vector keep their random initialization.
  """
  table = np.asarray(table)
  if vectors.shape != table.shape:
    raise ConfigError(f'pretrained vectors are {vectors.shape[0]}x{vectors.shape[1]}, the model\'s embedding '
                      f'table {table.shape[0]}x{table.shape[1]}: set model.embed_dim={vectors.shape[1]}')
  if not found.any():
    return table
  scale = table.std() / max(float(vectors[found].std()), 1e-12)
  return np.where(found[:, None], vectors * scale, table).astype(table.dtype)
