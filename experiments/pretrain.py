"""Pretrains an LSTM language model on raw text, resuming from --workdir: ULMFiT's stages 1 and 2.

  python -m experiments.pretrain --config=experiments/configs/lm_imdb.py --workdir=runs/lm_imdb

The text is the train and unlabelled splits of config.data (a local file, folder or
archive, or a tfds dataset by name); never its dev or test texts. Documents are streamed
in truncated-BPTT windows with the LSTM state carried from one to the next, and dev/test
perplexity is measured on carved-out documents. Checkpoints, resume, SIGTERM, progress,
ETA and TensorBoard are a classification run's (it is the same loop, with the
language-model task). The run's tokenizer is the one every finetuning run from it reuses:

  # Stage 2: the same language model finetuned on the target task's own text.
  python -m experiments.pretrain --config=experiments/configs/lm_imdb.py:sst2 --workdir=runs/lm_sst2 \
      --config.init.checkpoint=runs/lm_imdb
  # Stage 3: the classifier (experiments/configs/ulmfit_*.py).
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Language-model config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs and results.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')
_START_JOB = common.define_job_flags()


def main(argv):
  def run():
    common.check_config(_CONFIG.value)
    _START_JOB()
    return common.run_training(_CONFIG.value, _WORKDIR.value, build=common.build_lm_experiment)

  common.run_trainer(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=common.parse_flags)
