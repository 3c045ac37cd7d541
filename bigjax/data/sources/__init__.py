"""Labelled text from local files, the IMDB archive or tensorflow-datasets.

`load_text_dataset` returns raw texts and integer labels split into train, dev
and test (and IMDB's unlabelled reviews); tokenization and batching live
elsewhere. Every problem with the input is raised as a `DataError` that says
what is wrong, where (file and line) and what to do.

This module checks the arguments and joins the pieces; one module per job does the rest:
`local` (.txt/.tsv/.csv/.jsonl files and folders), `imdb` (the IMDB archive and folder),
`tfds` (tensorflow-datasets by name), `labels` (label strings to class ids, their checks),
`splits` (dev/test carved from train, train limits), `text_forms` (Penn Treebank text
to plain), `common` (the dataset types and what the sources share).
"""

import codecs
import os

import numpy as np

from bigjax.data.sources import common
from bigjax.data.sources import local
from bigjax.data.sources import splits
from bigjax.data.sources import text_forms
from bigjax.data.sources import tfds as tfds_source
from bigjax.data.sources.common import ON_BAD_LINES
from bigjax.data.sources.common import Split
from bigjax.data.sources.common import TextDataset
from bigjax.data.sources.splits import with_train_limit
from bigjax.data.sources.text_forms import ptb_to_plain
from bigjax.data.sources.text_forms import TEXT_FORMS
from bigjax.errors import DataError

__all__ = ['ON_BAD_LINES', 'TEXT_FORMS', 'Split', 'TextDataset', 'load_labelled_examples',
           'load_text_dataset', 'ptb_to_plain', 'with_train_limit']


def load_text_dataset(*, path: str = '', name: str = '',
                      encoding: str = 'utf-8', data_dir: str = '',
                      dev_fraction: float = 0.1, test_fraction: float = 0.1,
                      seed: int = 0, text_column: str = 'text',
                      label_column: str = 'label', num_classes: int = 0,
                      max_line_mb: int = 64,
                      on_bad_lines: str = 'error',
                      text_form: str = 'plain') -> TextDataset:
  """Loads a text-classification dataset from `path` or, if empty, tfds `name`.

  Args:
    path: a local file, folder or IMDB archive (format detected from it).
    name: a tensorflow-datasets name such as 'imdb_reviews' or 'glue/sst2'.
    encoding: how the bytes of local files are decoded.
    data_dir: tensorflow-datasets data folder ('' = its default).
    dev_fraction: share of train carved out as dev when there is no dev.
    test_fraction: share carved out as test when there is no labelled test.
    seed: seed of the carving permutation.
    text_column: column/key of the text in .tsv/.csv/.jsonl (or tfds feature).
    label_column: column/key of the label in .tsv/.csv/.jsonl.
    num_classes: number of classes; 0 = from the data (the label names, or
      max label + 1, and then every class 0..K-1 must occur in train); > 0
      declares them: labels in [0, num_classes) are accepted even where train
      has no example of some.
    max_line_mb: longest line accepted in local files, in MiB. It only guards
      memory against files that are not one example per line: long texts are
      cut to max_len tokens later anyway.
    on_bad_lines: 'error' stops at an example whose text is empty (a label
      alone); 'skip' drops such examples and counts them in the description.
    text_form: 'plain', or 'ptb' for Penn Treebank tokens, joined back into
      plain text (`ptb_to_plain`).

  Returns:
    The dataset; labels are int32 in [0, num_classes), -1 for unlabelled text.
  """
  for what, value in (('dev_fraction', dev_fraction),
                      ('test_fraction', test_fraction)):
    if not 0.0 <= value < 1.0:
      raise DataError(f'data.{what}={value} must be in [0, 1).')
  if dev_fraction + test_fraction >= 1.0:
    raise DataError(
        f'data.dev_fraction + data.test_fraction = '
        f'{dev_fraction + test_fraction} leaves nothing to train on; make '
        'their sum < 1.')
  if num_classes < 0:
    raise DataError(f'data.num_classes={num_classes} must be >= 0 '
                    '(0 = infer from the labels).')
  if on_bad_lines not in ON_BAD_LINES:
    raise DataError(f'data.on_bad_lines={on_bad_lines!r} is unknown; use one '
                    f'of {", ".join(map(repr, ON_BAD_LINES))}.')
  if max_line_mb < 1:
    raise DataError(f'data.max_line_mb={max_line_mb} must be >= 1 (MiB).')
  text_forms.check_text_form(text_form)
  carve = splits.Carver(dev_fraction, test_fraction, seed)
  if path:
    try:
      codecs.lookup(encoding)
    except LookupError:
      raise DataError(f'Unknown data.encoding {encoding!r}; use a Python '
                      'codec name such as utf-8 or latin-1.') from None
    parts, origin, names = local.load(
        os.path.expanduser(path), encoding=encoding, text_column=text_column,
        label_column=label_column, max_line_bytes=max_line_mb * common.MIB,
        on_bad_lines=on_bad_lines)
  elif name:
    parts, origin, names = tfds_source.load(name, data_dir=data_dir,
                                            text_column=text_column,
                                            label_column=label_column)
  else:
    raise DataError(
        'No data given: set data.path to local files (' + common.PATH_HINT +
        ') or data.name to a tensorflow-datasets name (e.g. imdb_reviews).')
  text_forms.to_plain(parts, text_form)
  return splits.finish(parts, origin=origin, label_names=names, carve=carve,
                       num_classes=num_classes)


def load_labelled_examples(path: str, *, label_names, encoding: str = 'utf-8',
                           text_column: str = 'text',
                           label_column: str = 'label', max_line_mb: int = 64,
                           on_bad_lines: str = 'error', text_form: str = 'plain') -> Split:
  """Every example of a file (or a folder's or the IMDB archive's test split), with labels
  numbered as a trained run numbers its classes (`label_names`, class id order).

  Label strings are matched to the names; integer labels must be class ids of the run.
  `text_form` is the run's data.text_form, for files written as its training data was.
  """
  text_forms.check_text_form(text_form)
  path = os.path.expanduser(path)
  parts, _, names = local.load(path, encoding=encoding,
                               text_column=text_column,
                               label_column=label_column,
                               max_line_bytes=max_line_mb * common.MIB,
                               on_bad_lines=on_bad_lines)
  text_forms.to_plain(parts, text_form)
  single_file = os.path.isfile(path) and not path.lower().endswith(
      ('.tar.gz', '.tgz'))
  which = 'train' if single_file else 'test'
  if which not in parts:
    raise DataError(f'{path} has no test split to evaluate on; point at the '
                    'test file itself.')
  part, label_names = parts[which], [str(n) for n in label_names]
  index = {n: i for i, n in enumerate(label_names)}
  labels = []
  for i, label in enumerate(part.labels):
    name = names[label] if names else str(label)
    if name not in index:
      raise DataError(f'{part.where(i)}: label {name!r} is not a class of the '
                      f'run, whose classes are {label_names}.')
    labels.append(index[name])
  return Split(texts=part.texts, labels=np.asarray(labels, np.int32))
