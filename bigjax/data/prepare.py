"""From a data source to what training reads: the run's tokenizer and encoded splits.

Both are start-up work that gives the same result every time for the same inputs, so
`prepare_data` keeps them in a cache (bigjax.data.cache) keyed by those inputs: a
second seed, a resumed run or a benchmark of the same config reads them back instead
of reading and tokenizing the data again.
"""
import dataclasses
import hashlib
import json
import logging
import os
from typing import Callable, Optional, Sequence

from etils import epath
import numpy as np

from bigjax.data import batching, sources
from bigjax.data.cache import Cache, digest
from bigjax.data.tokenizer import FILENAME, Tokenizer

SPLITS = ('train', 'dev', 'test')


def labels_fingerprint(labels: dict) -> str:
  """A hash of every split's size and labels: checkpoints of other data are refused."""
  hasher = hashlib.sha256()
  for name in SPLITS:
    split_labels = np.asarray(labels[name], np.int32)
    hasher.update(f'{name}:{len(split_labels)}:'.encode())
    hasher.update(split_labels.tobytes())
  return hasher.hexdigest()[:16]


def data_fingerprint(dataset: sources.TextDataset) -> str:
  return labels_fingerprint({name: dataset.splits[name].labels for name in SPLITS})


def run_tokenizer(workdir: str | None, train_texts: Sequence[str] | None,
                  train_fn: Callable[[Sequence[str]], Tokenizer], save: bool = True) -> Tokenizer:
  """The run's tokenizer: reloaded from the workdir, so a resumed run encodes identically;
  else train_fn(train_texts), saved there.

  Training is deterministic, so every process of a multi-host job trains the same one
  and only the first saves it. workdir=None: trained and kept nowhere.
  """
  if workdir is not None and epath.Path(workdir, FILENAME).exists():
    return Tokenizer.load(workdir)
  tokenizer = train_fn(train_texts)
  if workdir is not None and save:
    tokenizer.save(workdir)
  return tokenizer


def encode_split(tokenizer: Tokenizer, split: sources.Split, max_len: int, keep: str,
                 direction: str = 'forward') -> batching.EncodedSplit:
  return batching.EncodedSplit.from_rows(tokenizer.encode(split.texts, max_len, keep, direction), split.labels)


@dataclasses.dataclass(frozen=True)
class PreparedData:
  tokenizer: Tokenizer
  splits: dict  # 'train', 'dev', 'test' -> EncodedSplit
  num_classes: int
  label_names: tuple
  description: str
  fingerprint: str  # labels_fingerprint of the splits
  dataset: Optional[sources.TextDataset]  # The texts; None where everything came from the cache.
  from_cache: dict  # {'tokenizer': bool, 'splits': bool}


def prepare_data(load: Callable[[], sources.TextDataset], *, source: dict, tokenizer_settings: dict,
                 train_tokenizer: Callable[[Sequence[str]], Tokenizer], max_len: int, keep: str,
                 direction: str = 'forward', fixed_tokenizer: Optional[Tokenizer] = None,
                 workdir: Optional[str] = None, save: bool = True, cache: Optional[Cache] = None) -> PreparedData:
  """The tokenizer and encoded splits of a source.

  load() reads the data; it is called only if something is not cached.
  source: what the data depends on (where it is, how it is read and split); with
    tokenizer_settings (how a tokenizer is trained), the cache keys.
  The tokenizer is, in order: the workdir's (a resumed run), fixed_tokenizer (a
  pretrained run's), the cache's, or trained on the train split (and cached). The
  workdir keeps the run's tokenizer (if save). direction: the order a text's tokens are
  kept in (Tokenizer.encode). cache=None: nothing is cached.
  """
  dataset = None

  def data():
    nonlocal dataset
    if dataset is None:
      dataset = load()
    return dataset

  from_cache = {'tokenizer': False, 'splits': False}

  def made_or_cached(_):
    """The tokenizer when the workdir has none: the pretrained one, the cache's, or a new one."""
    if fixed_tokenizer is not None:
      return fixed_tokenizer
    parts = {'source': source, 'tokenizer': tokenizer_settings}
    key = digest(parts)
    found = cache.get('tokenizers', key) if cache else None
    if found:
      from_cache['tokenizer'] = True
      return Tokenizer.load(found)
    tokenizer = train_tokenizer(data().splits['train'].texts)
    if cache:
      cache.put('tokenizers', key, tokenizer.save, parts)
    return tokenizer

  tokenizer = run_tokenizer(workdir, None, made_or_cached, save=save)

  parts = {'source': source, 'tokenizer': tokenizer.fingerprint(), 'max_len': max_len, 'keep': keep}
  if direction != 'forward':  # Forward runs keep the keys their caches were written under.
    parts['direction'] = direction
  key = digest(parts)
  found = cache.get('encoded', key) if cache else None
  if found:
    splits, meta = _read_encoded(found)
    from_cache['splits'] = True
    description = f'{meta["description"]} [tokenized splits read from {found}]'
  else:
    splits = {name: encode_split(tokenizer, data().splits[name], max_len, keep, direction) for name in SPLITS}
    meta = {'num_classes': data().num_classes, 'label_names': list(data().label_names),
            'description': data().description}
    description = meta['description']
    if cache:
      where = cache.put('encoded', key, lambda folder: _write_encoded(folder, splits, meta), parts)
      if where is None:
        logging.warning('could not write the tokenized splits to the cache in %s; the next run tokenizes again',
                        cache.root)
  return PreparedData(tokenizer=tokenizer, splits=splits, num_classes=meta['num_classes'],
                      label_names=tuple(meta['label_names']), description=description,
                      fingerprint=labels_fingerprint({n: s.labels for n, s in splits.items()}), dataset=dataset,
                      from_cache=from_cache)


def _write_encoded(folder: str, splits: dict, meta: dict) -> None:
  arrays = {}
  for name, split in splits.items():
    arrays.update({f'{name}.tokens': split.tokens, f'{name}.offsets': split.offsets, f'{name}.labels': split.labels})
  np.savez(os.path.join(folder, 'splits.npz'), **arrays)
  with open(os.path.join(folder, 'meta.json'), 'w', encoding='utf-8') as f:
    json.dump(meta, f)


def _read_encoded(folder: str):
  with np.load(os.path.join(folder, 'splits.npz')) as arrays:
    splits = {name: batching.EncodedSplit(arrays[f'{name}.tokens'], arrays[f'{name}.offsets'], arrays[f'{name}.labels'])
              for name in SPLITS}
  with open(os.path.join(folder, 'meta.json'), encoding='utf-8') as f:
    return splits, json.load(f)
