"""A config's data section as data: the dataset, the tokenizer and the encoded splits.

The bridge from config keys (data.*, cache.*) to bigjax.data's plain-argument functions, and
how a trained run read its data (to read a labelled file the same way).
"""
import functools
from typing import Callable, Optional

import jax
import ml_collections

from bigjax.data import cache as cache_lib
from bigjax.data import prepare, sources
from bigjax.data.tokenizer import Tokenizer, train_tokenizer

# What a data section's splits depend on, beside its source (tokenizer keys are separate).
_SPLIT_KEYS = ('encoding', 'text_column', 'label_column', 'num_classes', 'dev_fraction', 'test_fraction',
               'on_bad_lines', 'text_form')


def load_data(c: ml_collections.ConfigDict, seed: int) -> sources.TextDataset:
  """The data section's dataset. Dev and test are carved with data.split_seed (runs saved before
  that key existed carved with their seed, which is passed here)."""
  return sources.load_text_dataset(
      path=c.path, name=c.name, encoding=c.encoding, data_dir=c.data_dir, dev_fraction=c.dev_fraction,
      test_fraction=c.test_fraction, seed=c.get('split_seed', seed), text_column=c.text_column,
      label_column=c.label_column, num_classes=c.num_classes, max_line_mb=c.max_line_mb,
      on_bad_lines=c.on_bad_lines, text_form=c.text_form)


def reading_settings(trained, **overrides) -> dict:
  """How a trained run read its data (its data section's encoding, columns, line limits and
  text form, unless `overrides` say otherwise): the settings a labelled file is read with."""
  data = trained.data
  settings = dict(encoding=data['encoding'], text_column=data['text_column'], label_column=data['label_column'],
                  max_line_mb=data['max_line_mb'], on_bad_lines=data['on_bad_lines'], text_form=data['text_form'])
  settings.update(overrides)
  return settings


def labelled_examples(trained, path: str, **overrides) -> sources.Split:
  """A labelled file's examples, read as a trained run read its data (reading_settings)."""
  return sources.load_labelled_examples(path, label_names=trained.label_names,
                                        **reading_settings(trained, **overrides))


def data_cache(config: ml_collections.ConfigDict) -> Optional[cache_lib.Cache]:
  if not config.cache.data:
    return None
  return cache_lib.Cache(config.cache.dir or cache_lib.default_root())


def prepare_classification_data(config: ml_collections.ConfigDict, workdir: Optional[str],
                                fixed_tokenizer: Optional[Tokenizer] = None) -> prepare.PreparedData:
  """The tokenizer and encoded splits of config.data, from the cache when they are in it."""
  c = config.data

  def load():
    dataset = load_data(c, config.seed)
    if c.train_limit:
      dataset = sources.with_train_limit(dataset, c.train_limit, config.seed)
    return dataset

  source = dict(cache_lib.source_identity(c.path, c.name, c.data_dir), split_seed=c.split_seed,
                **{key: c[key] for key in _SPLIT_KEYS})
  if c.train_limit:  # The subset is drawn with the run's seed.
    source.update(train_limit=c.train_limit, seed=config.seed)
  return prepare.prepare_data(
      load, source=source, tokenizer_settings={k: c[k] for k in ('tokenizer', 'vocab_size', 'min_frequency')},
      train_tokenizer=tokenizer_trainer(c), max_len=c.max_len, keep=c.keep, direction=c.direction,
      fixed_tokenizer=fixed_tokenizer, workdir=workdir, save=jax.process_index() == 0, cache=data_cache(config))


def tokenizer_trainer(c: ml_collections.ConfigDict) -> Callable[[list[str]], Tokenizer]:
  return functools.partial(train_tokenizer, vocab_size=c.vocab_size, kind=c.tokenizer, min_frequency=c.min_frequency)
