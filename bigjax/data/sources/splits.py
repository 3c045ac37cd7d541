"""Splits: dev and test carved from train where a source has none, and train limits.

`finish` turns the parts a source read into the `TextDataset`: labels checked, missing
splits carved by a seeded permutation, and the one-line description of it all.
"""

import dataclasses
import os

import numpy as np

from bigjax.data.sources import common
from bigjax.data.sources import labels as labels_lib
from bigjax.errors import DataError


def with_train_limit(dataset: common.TextDataset, limit: int, seed: int) -> common.TextDataset:
  """The dataset with a seeded, class-balanced subset of `limit` training examples (a label
  budget): limit // K of each class, the remainder to the first classes, all of a class
  that has fewer. Dev, test and unlabelled text are kept whole."""
  train = dataset.splits['train']
  if limit >= len(train.texts):
    return dataset
  rng = np.random.default_rng([seed, 0xB0D6E7])
  classes = np.unique(train.labels)
  quota = {c: limit // len(classes) + (i < limit % len(classes)) for i, c in enumerate(classes)}
  chosen = np.sort(np.concatenate([rng.permutation(np.flatnonzero(train.labels == c))[:quota[c]] for c in classes]))
  subset = common.Split([train.texts[i] for i in chosen], train.labels[chosen])
  return dataclasses.replace(
      dataset, splits=dict(dataset.splits, train=subset),
      description=f'{dataset.description}; train limited to {len(chosen)} examples (data.train_limit, '
                  f'class-balanced, seed {seed})')


@dataclasses.dataclass(frozen=True)
class Carver:
  """How missing dev/test splits are carved from train."""
  dev_fraction: float
  test_fraction: float
  seed: int


def finish(parts: dict[str, common.Part], *, origin: str,
           label_names: list[str] | None, carve: Carver,
           num_classes: int) -> common.TextDataset:
  """Checks labels, carves missing dev/test from train, builds the dataset."""
  for part in parts.values():
    if not part.texts:
      skipped = (f', or {part.skipped} {part.unit}s with no text, skipped'
                 if part.skipped else '')
      raise DataError(f'{part.source}: no examples after parsing (only '
                      f'blank lines or a header{skipped}); check that it is '
                      'the right file, or remove it to carve that split from '
                      'train.')
  k = labels_lib.check_labels(parts, label_names, num_classes)
  if k < 2:
    raise DataError(f'{origin}: only {k} class; a classifier needs at least '
                    '2 (check data.label_column, or set data.num_classes).')

  notes = []
  skipped = [f'{p.skipped} {p.unit}{"s" if p.skipped > 1 else ""} with no '
             f'text in {os.path.basename(p.source)}'
             for p in parts.values() if p.skipped]
  if skipped:
    notes.append(f'skipped {", ".join(skipped)} (data.on_bad_lines=skip)')
  rng = np.random.default_rng(carve.seed)
  need = [s for s in ('test', 'dev') if s not in parts]  # test first
  if need:
    fractions = {'test': carve.test_fraction, 'dev': carve.dev_fraction}
    for s in need:
      if fractions[s] <= 0:
        raise DataError(f'{origin} has no {s} split, so it is carved from '
                        f'train; set data.{s}_fraction > 0 (e.g. 0.1).')
    train = parts['train']
    n = len(train.texts)
    perm = rng.permutation(n)
    start = 0
    for s in need:
      count = max(1, int(round(fractions[s] * n)))
      parts[s] = train.subset(np.sort(perm[start:start + count]))
      start += count
    if start >= n:
      raise DataError(f'{train.source}: {n} examples are too few to carve '
                      f'{" and ".join(need)} from; give more data or those '
                      'splits as files.')
    parts['train'] = train.subset(np.sort(perm[start:]))
    carved = ' and '.join(f'{s} {fractions[s]:.0%}' for s in need)
    notes.append(f'{carved} carved from train by a seeded permutation '
                 f'(seed {carve.seed})')

  splits = {}
  for s in ('train', 'dev', 'test', 'unlabeled'):
    if s in parts:
      p = parts[s]
      labels = (np.full(len(p.texts), -1, np.int32) if s == 'unlabeled' else
                np.asarray(p.labels, dtype=np.int32))
      splits[s] = common.Split(texts=p.texts, labels=labels)
  counts = ' / '.join(f'{s} {len(v.texts)}' for s, v in splits.items())
  desc = [origin] + notes + [f'{counts}; {k} classes']
  if label_names:
    desc.append('labels ' + ', '.join(f'{i}={n}'
                                      for i, n in enumerate(label_names)))
  names = tuple(label_names) if label_names else tuple(str(i) for i in range(k))
  return common.TextDataset(splits=splits, num_classes=k, description='; '.join(desc), label_names=names)
