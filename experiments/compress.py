"""Compresses a trained run into a new run folder, and reports what it bought.

  python -m experiments.compress --from=runs/mlp_sst2 --method=quantize --workdir=runs/mlp_sst2_int8
  python -m experiments.compress --from=runs/mlp_sst2 --method=prune --workdir=runs/mlp_sst2_pruned80 \
      --config.prune.target_sparsity=0.8
  python -m experiments.compress --from=runs/lstm_sst2 --method=distill --workdir=runs/mlp_from_lstm \
      --student=experiments/configs/mlp_sst2.py --config.distill.temperature=2

quantize: int8 weights with qwix, no training (--config.quantize.mode=int8|weights,
  --config.quantize.activations=dynamic|static).
prune: finetunes the run (init.checkpoint=--from) while magnitude pruning ramps to
  prune.target_sparsity (default here 0.8) over prune.* (configs/base.py), on the labels
  mixed with the unpruned run's soft targets (distill.teacher=--from; set
  --config.distill.teacher= to prune on the labels alone); train.epochs defaults to 5 here.
  Every other key is the source run's, and can be overridden.
distill: trains the --student config (its own model, optimizer and schedule; the teacher's
  data and tokenizer) on the labels mixed with the --from run's soft targets (distill.*).

The config is the source run's (quantize, prune) or the student's (distill), and any key
of it can be set with --config.KEY=VALUE. The output folder is a run like any other
(evaluate, explain, export and serve take it). It gets compression.json and
compression.md: parameters, bytes on disk, CPU latency per example at batch 1 and 64
(measured side by side with the source), dev and test accuracy, before and after.
"""
import os
import runpy
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from bigjax import run_record
from bigjax import runs
from bigjax import training
from bigjax import workdirs
from bigjax.compress import quantized_run, report as report_lib
from bigjax.config import checks
from bigjax.data import from_config
from bigjax.errors import ConfigError
from experiments import cli
from experiments.configs import base

METHODS = ('quantize', 'prune', 'distill')
PRUNE_DEFAULTS = {'prune.target_sparsity': 0.8, 'train.epochs': 5}

_FROM = flags.DEFINE_string('from', None, 'The trained run to compress (the teacher, for distill).')
_METHOD = flags.DEFINE_enum('method', None, METHODS, 'How to compress.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The new run folder.')
_STUDENT = flags.DEFINE_string('student', '', 'distill: the student\'s config file (FILE or FILE:variant).')
_ROUNDS = flags.DEFINE_integer('latency_rounds', 5, 'Alternating timing rounds per batch size.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def _flag_value(argv: list[str], name: str) -> str:
  prefix = f'--{name}='
  return next((a[len(prefix):] for a in argv if a.startswith(prefix)), '')


def build_config(source: str, method: str, student: str):
  """The config the method runs with, before --config.KEY overrides."""
  saved = run_record.read(source).config
  if method == 'distill':
    if not student:
      raise ConfigError('--method=distill needs --student=CONFIG_FILE (the student\'s recipe)')
    path, _, arg = student.partition(':')
    if not os.path.exists(path):
      raise ConfigError(f'--student={student}: no such config file')
    config = runpy.run_path(path)['get_config'](arg)
    config.data = base.merged({'data': saved['data']}).data  # The teacher's data: its splits, its tokens.
    config.distill.teacher = os.path.abspath(source)
    return config
  config = base.merged(saved)
  # The source's own start (and teacher) made it; what comes next starts from the source.
  config.init.checkpoint, config.init.drop, config.init.embeddings = '', '', ''
  config.distill.teacher = ''
  if method == 'prune':
    config.init.checkpoint = os.path.abspath(source)
    # The unpruned source's soft targets recover what the removed weights knew: on SST-2 the
    # 80 % MLP keeps its accuracy with them and loses ~1.5 points without (docs/results/compression.md).
    # --config.distill.teacher= (empty) prunes on the labels alone.
    config.distill.teacher = os.path.abspath(source)
    config.train.steps = 0
    # The masks live in the dense optimizer's state: a source trained with row-sparse tables is
    # finetuned with dense updates (its optimizer state is not carried over anyway).
    config.optim.sparse_embeddings = ''
    for key, value in PRUNE_DEFAULTS.items():
      section, name = key.split('.')
      config[section][name] = value
  return config


def main(argv):
  def run():
    config = _CONFIG.value
    checks.check_config(config)
    # Refused before anything is read or written: a --workdir that is --from (or inside it,
    # or another run) would lose the trained run.
    command = f'experiments.compress --method={_METHOD.value}'
    inputs = {'--from': _FROM.value, **workdirs.config_inputs(config.to_dict())}
    workdirs.check_apart(_WORKDIR.value, inputs)
    source = runs.load_run(_FROM.value)
    workdir = workdirs.claim(_WORKDIR.value, command, inputs)
    dataset = from_config.load_data(config.data, config.seed)
    if _METHOD.value == 'quantize':
      q, train, dev = config.quantize, dataset.splits['train'], dataset.splits['dev']
      try:
        compressed = quantized_run.quantize_run(
            source, workdir, mode=q.mode, activations=q.activations, dev_texts=dev.texts, dev_labels=dev.labels,
            calibration_texts=train.texts[:q.calibration_examples])
      except ValueError as e:  # A mode the model does not take.
        raise ConfigError(str(e)) from None
    else:
      cli.use_compilation_cache(config)
      training.run_training(config, workdir, command=command)
      compressed = runs.load_run(workdir)
    result = report_lib.method_report(_METHOD.value, source, compressed, dataset, config, _ROUNDS.value)
    with open(os.path.join(workdir, 'compression.md'), 'w', encoding='utf-8') as f:
      f.write(report_lib.markdown(result))
    cli.print_report(result, os.path.join(workdir, 'compression.json'))

  cli.run_trainer(argv, run, _VERBOSE.value)


def _define_config(argv: list[str]):
  """--config is the source run's (or the student's) config, so --config.KEY overrides work."""
  source, method = _flag_value(argv, 'from'), _flag_value(argv, 'method')
  try:
    config = build_config(source, method, _flag_value(argv, 'student')) if source and method else base.get_config()
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  return config_flags.DEFINE_config_dict('config', config, 'The method\'s config (see the module docstring).',
                                         lock_config=True)


if __name__ == '__main__':
  _CONFIG = _define_config(sys.argv)
  flags.mark_flags_as_required(['from', 'method', 'workdir'])
  app.run(main, flags_parser=cli.parse_flags)
