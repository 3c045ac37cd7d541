"""From a loaded dataset to what training reads: the run's tokenizer and encoded splits."""
import hashlib
import os
from typing import Callable, Sequence

import numpy as np

from bigjax.data import batching, sources
from bigjax.data.tokenizer import FILENAME, Tokenizer


def data_fingerprint(dataset: sources.TextDataset) -> str:
  """A hash of every split's size and labels: checkpoints of other data are refused."""
  digest = hashlib.sha256()
  for name in ('train', 'dev', 'test'):
    split = dataset.splits[name]
    digest.update(f'{name}:{len(split.texts)}:'.encode())
    digest.update(np.asarray(split.labels, np.int32).tobytes())
  return digest.hexdigest()[:16]


def run_tokenizer(workdir: str | None, train_texts: Sequence[str], train_fn: Callable[[Sequence[str]], Tokenizer],
                  save: bool = True) -> Tokenizer:
  """The run's tokenizer: reloaded from the workdir, so a resumed run encodes identically.

  Training is deterministic, so every process of a multi-host job trains the same one
  and only the first saves it. workdir=None: trained and kept nowhere.
  """
  if workdir is not None and os.path.exists(os.path.join(workdir, FILENAME)):
    return Tokenizer.load(workdir)
  tokenizer = train_fn(train_texts)
  if workdir is not None and save:
    tokenizer.save(workdir)
  return tokenizer


def encode_split(tokenizer: Tokenizer, split: sources.Split, max_len: int, keep: str) -> batching.EncodedSplit:
  return batching.EncodedSplit.from_rows(tokenizer.encode(split.texts, max_len, keep), split.labels)
