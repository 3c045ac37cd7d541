"""Rows of token ids -> fixed-shape padded batches, for the attribution and faithfulness passes.

Kept here rather than taken from bigjax.data (which interpret does not import): these
batches carry no labels or weights, only the rows' places, so results map back to them.
"""
from typing import Iterator, NamedTuple, Sequence

import numpy as np


class Padded(NamedTuple):
  token_ids: np.ndarray  # int32[batch_size, width]; 0 is padding
  lengths: np.ndarray  # int32[batch_size]; filler rows have length 0
  rows: np.ndarray  # int64[n]: which input rows fill the first n rows of the batch


def width_for(length: int, widths: Sequence[int]) -> int:
  """The smallest width that holds `length` tokens (a row longer than all is a caller's bug)."""
  for w in sorted(widths):
    if w >= length:
      return w
  raise ValueError(f'a row of {length} tokens is longer than the widest batch ({max(widths)})')


def padded_batches(rows: Sequence[np.ndarray], batch_size: int, widths: Sequence[int]) -> Iterator[Padded]:
  """Batches of `batch_size` rows, shortest rows first, each padded to the smallest width holding it.

  Every batch has batch_size rows (filler rows of length 0 at the end), so each width is
  compiled once.
  """
  lengths = np.array([len(r) for r in rows], np.int64)
  order = np.argsort(lengths, kind='stable')
  for start in range(0, len(order), batch_size):
    chosen = order[start:start + batch_size]
    width = width_for(int(lengths[chosen].max(initial=0)), widths)
    token_ids = np.zeros((batch_size, width), np.int32)
    for i, r in enumerate(chosen):
      token_ids[i, :lengths[r]] = rows[r]
    out_lengths = np.zeros(batch_size, np.int32)
    out_lengths[:len(chosen)] = lengths[chosen]
    yield Padded(token_ids, out_lengths, chosen)
