"""Pretrains word vectors for a classifier config: the first stage of pretrain -> finetune.

  python -m experiments.pretrain_embeddings --config=experiments/configs/lstm_imdb.py --workdir=runs/w2v_imdb
  python -m experiments.train --config=experiments/configs/lstm_imdb.py --workdir=runs/lstm_imdb \
      --config.init.embeddings=runs/w2v_imdb

Trains the tokenizer the classifier would train (same config), encodes the corpus with it
(the train split, the unlabelled split if there is one, and pretrain.corpus_path's text;
never dev or test), learns skip-gram vectors for its ids, and writes tokenizer.json,
embeddings.npz and pretrain.json to --workdir (bigjax/pretrain/word_vectors.py). A finished
workdir is reused as is.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from bigjax.config import checks
from bigjax.pretrain import word_vectors
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Classifier config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for the tokenizer and the vectors.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def main(argv):
  def run():
    checks.check_config(_CONFIG.value)
    return word_vectors.pretrain_from_config(_CONFIG.value, _WORKDIR.value)

  cli.run_trainer(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=cli.parse_flags)
