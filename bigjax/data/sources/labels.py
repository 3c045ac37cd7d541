"""Labels: strings to class ids, and the checks that every label is a learnable class.

Integer labels are class ids as they are; string labels are numbered in sorted order of
the train split's. With no declared number of classes, K is max label + 1 and every
class must occur in train.
"""

import re

from bigjax.data.sources import common
from bigjax.errors import DataError

INT_RE = re.compile(r'[+-]?\d+')
# More digits than int64 holds is no class id (and int() of over 4300 digits
# raises ValueError).
_MAX_LABEL_DIGITS = 18


def int_label(value: str, where: str) -> int:
  """An integer label string as an int; one too long for int64 is an error."""
  if len(value.lstrip('+-')) > _MAX_LABEL_DIGITS:
    shown = value if len(value) <= 40 else value[:37] + '...'
    raise DataError(
        f'{where}: label {shown} ({len(value.lstrip("+-"))} digits) is not a '
        'plausible class id; labels must be integers 0..K-1.')
  return int(value)


def map_string_labels(parts: dict[str, common.Part]):
  """Turns label strings into ints; returns (parts, names or None).

  Integer strings become ints. Otherwise the sorted distinct train labels are
  numbered 0..K-1 and every split must use only those.
  """
  if all(isinstance(l, int) or INT_RE.fullmatch(l)
         for p in parts.values() for l in p.labels):
    for p in parts.values():
      p.labels = [l if isinstance(l, int) else int_label(l, p.where(i))
                  for i, l in enumerate(p.labels)]
    return parts, None
  names = sorted(set(parts['train'].labels))
  index = {n: i for i, n in enumerate(names)}
  for p in parts.values():
    for i, l in enumerate(p.labels):
      if l not in index:
        raise DataError(
            f'{p.where(i)}: label {l!r} does not occur in train '
            f'({parts["train"].source}), whose labels are {names}; use the '
            'same label names in every split.')
    p.labels = [index[l] for l in p.labels]
  return parts, names


def check_labels(parts: dict[str, common.Part], label_names: list[str] | None,
                 num_classes: int) -> int:
  """Checks every label and returns the number of classes K.

  Declared classes (data.num_classes, label names) may lack training examples.
  Inferred ones (max label + 1) must each occur in train: a class without
  one cannot be learned, and a stray huge label would otherwise size the
  model. Labels stay Python ints here, so none can overflow an array.
  """
  labelled = [p for s, p in parts.items() if s != 'unlabeled']
  if num_classes or label_names:
    k = num_classes or len(label_names)
    for part in labelled:
      for i, label in enumerate(part.labels):
        if not 0 <= label < k:
          fix = ('raise data.num_classes or fix the label' if num_classes else
                 'labels must be integers 0..K-1')
          raise DataError(
              f'{part.where(i)}: label {label} is out of range [0, {k}) '
              f'(num_classes={k}); {fix}.')
    return k
  train = parts['train']
  seen = set(train.labels)
  k = max(seen) + 1
  for part in [train] + [p for p in labelled if p is not train]:
    for i, label in enumerate(part.labels):
      if label < 0:
        raise DataError(
            f'{part.where(i)}: label {label} is out of range [0, {k}) '
            f'(num_classes={k} from the data); labels must be integers '
            '0..K-1.')
  if len(seen) < k:
    i = train.labels.index(k - 1)
    raise DataError(
        f'{train.where(i)}: label {k - 1} makes {k} classes (max label + 1), '
        f'but train has examples of only {len(seen)} of them (labels '
        f'{_show_labels(seen)}); a class without training examples cannot be '
        f'learned: {_fix_unseen(k - 1, len(seen))}.')
  for part in labelled:
    for i, label in enumerate(part.labels):
      if label >= k:
        raise DataError(
            f'{part.where(i)}: label {label} does not occur in train '
            f'({train.source}), whose labels are {_show_labels(seen)}; a '
            'class without training examples cannot be learned: '
            f'{_fix_unseen(label, len(seen))}.')
  return k


def _fix_unseen(label: int, seen: int) -> str:
  """What to do about a label no training example has."""
  if label + 1 > 2 * seen + 100:  # far above the rest: a typo, not a class
    return 'fix the label (it is implausibly far above the others)'
  return ('fix the label, or, if the classes really are '
          f'0..{label}, declare them with --config.data.num_classes='
          f'{label + 1}')


def _show_labels(labels, most: int = 12) -> str:
  shown = sorted(labels)
  text = ', '.join(map(str, shown[:most]))
  return text + (f', ... ({len(shown)} in all)' if len(shown) > most else '')
