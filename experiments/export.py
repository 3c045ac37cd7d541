"""Exports a trained run as a self-contained artifact folder with its model card, or as a
Hugging Face folder.

  python -m experiments.export --workdir=runs/mlp_sst2 --out=artifacts/mlp_sst2
  python -m experiments.export --workdir=runs/minilm_sst2 --out=exports/minilm_sst2_hf --format=huggingface

--format=huggingface (a run started from a Hugging Face folder, init.pretrained) writes
config.json, model.safetensors and the tokenizer files that transformers'
AutoModelForSequenceClassification and AutoTokenizer load (bigjax/huggingface/export.py).

The folder loads with jax, numpy and tokenizers alone (`python DIR/predict.py < texts.txt`;
bigjax/export/export.py lists its files). The test split (the run's own, re-read from its
data.path; or --data) is scored with the reloaded artifact for MODEL_CARD.md (accuracy,
macro-F1, per-class F1, ECE, reliability.png) and with the checkpoint, and the largest
difference of their probabilities is printed and recorded. Without readable data the card
uses the run's results.json and says calibration was not measured.
"""
import json
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections

from bigjax import errors
from bigjax import runs
from bigjax import workdirs
from bigjax.data import from_config
from bigjax.data import sources
from bigjax.errors import BigjaxError
from bigjax.export import export, model_card
from bigjax.huggingface import export as hf_export
from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_OUT = flags.DEFINE_string('out', None, 'The artifact folder to write (new, or an artifact with --overwrite).')
_FORMAT = flags.DEFINE_enum('format', 'bigjax', ['bigjax', 'huggingface'], 'bigjax: the artifact that predict.py '
                            'loads; huggingface: a transformers folder (runs started from init.pretrained).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace --out if it is an artifact already.')
_PLATFORMS = flags.DEFINE_list('platforms', list(export.PLATFORMS), 'Platforms to lower for (those that do not '
                               'lower with the installed jaxlib are skipped and listed in metadata.json).')
_DATA = flags.DEFINE_string('data', '', 'Labelled test data for the card (default: the run\'s own test split).')
_BINS = flags.DEFINE_integer('ece_bins', model_card.DEFAULT_BINS, 'Equal-width confidence bins of the ECE.')
_LANGUAGE = flags.DEFINE_string('language', 'English', 'The language of the training data, for the card.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def _data(trained):
  """((name, texts, labels) of the test split or None, the training-data summary)."""
  data = trained.data
  if _DATA.value:
    split = sources.load_labelled_examples(_DATA.value, label_names=trained.label_names, encoding=data['encoding'],
                                           text_column=data['text_column'], label_column=data['label_column'],
                                           text_form=data['text_form'])
    return (_DATA.value, split.texts, split.labels), model_card.training_summary('', {}, trained.derived)
  try:
    dataset = from_config.load_data(ml_collections.ConfigDict(data), trained.config['seed'])
  except BigjaxError as e:
    logging.warning('the run\'s data cannot be read (%s); the card uses results.json', e)
    return None, model_card.training_summary(data['path'] or data['name'], {}, trained.derived)
  split_sizes = {name: len(split.texts) for name, split in dataset.splits.items()}
  test = dataset.splits['test']
  return ((f'{data["path"] or data["name"]} (test split)', test.texts, test.labels),
          model_card.training_summary(dataset.description, split_sizes, trained.derived))


def main(argv):
  def run():
    if _BINS.value < 1:
      raise errors.ConfigError(f'--ece_bins={_BINS.value} must be >= 1')
    workdirs.check_apart(_OUT.value, {'--workdir': _WORKDIR.value}, out_flag='--out')
    trained = runs.load_run(_WORKDIR.value)
    if _FORMAT.value == 'huggingface':
      json.dump(hf_export.write_folder(trained, _OUT.value, overwrite=_OVERWRITE.value), sys.stdout, indent=1)
      print()
      return
    evaluation_data, training = _data(trained)
    summary = export.export_run(trained, _OUT.value, platforms=_PLATFORMS.value, overwrite=_OVERWRITE.value,
                                evaluation_data=evaluation_data, training=training, language=_LANGUAGE.value,
                                bins=_BINS.value)
    json.dump(summary, sys.stdout, indent=1)
    print()

  cli.run_tool(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'out'])
  app.run(main, flags_parser=cli.parse_flags)
