"""Predicts labels for texts with an exported model: JSONL out, in input order.

  python -m experiments.predict --model=artifacts/mlp_sst2 < texts.txt > predictions.jsonl
  python -m experiments.predict --model=artifacts/mlp_sst2 --input=reviews.jsonl --text_key=review

Input: one text per line, or JSON lines (objects with --text_key, or strings); --format=auto
decides from the first line. Each output line is {"label": ..., "probabilities": {label: p}},
the record POST /predict of experiments.serve answers with. Large inputs are read and
written --chunk texts at a time, in batches of --batch_size, with a progress bar on stderr.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
import tqdm

from bigjax import errors
from bigjax import workdirs
from bigjax.errors import DataError
from bigjax.export import loader
from experiments import cli

_MODEL = flags.DEFINE_string('model', None, 'The artifact folder (python -m experiments.export writes one).')
_INPUT = flags.DEFINE_string('input', '-', 'A file of texts; -: standard input.')
_OUTPUT = flags.DEFINE_string('output', '-', 'Where the JSONL goes; -: standard output.')
_FORMAT = flags.DEFINE_enum('format', 'auto', loader.FORMATS, 'lines: a text per line; jsonl: JSON lines.')
_TEXT_KEY = flags.DEFINE_string('text_key', 'text', 'The text field of JSON objects.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Texts per model call.')
_CHUNK = flags.DEFINE_integer('chunk', 4096, 'Texts read, predicted and written at a time.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'A progress bar on stderr.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def main(argv):
  logging.set_verbosity(logging.WARNING)

  def run():
    if len(argv) > 1:
      raise errors.ConfigError(f'unexpected arguments {argv[1:]}; flags are written --name=value')
    if _BATCH_SIZE.value < 1 or _CHUNK.value < 1:
      raise errors.ConfigError('--batch_size and --chunk must be >= 1')
    if _OUTPUT.value != '-':
      _check_output(_OUTPUT.value)
    try:
      artifact = loader.load(_MODEL.value)
    except loader.ArtifactError as e:
      raise errors.ConfigError(str(e)) from None
    if _INPUT.value != '-' and not os.path.isfile(_INPUT.value):
      raise errors.ConfigError(f'--input={_INPUT.value} is not a file')
    source = sys.stdin.buffer if _INPUT.value == '-' else open(_INPUT.value, 'rb')  # pylint: disable=consider-using-with
    sink = sys.stdout if _OUTPUT.value == '-' else open(_OUTPUT.value, 'w', encoding='utf-8')  # pylint: disable=consider-using-with
    total = None if _INPUT.value == '-' else _count_lines(_INPUT.value)
    with source, tqdm.tqdm(total=total, unit=' texts', file=sys.stderr, disable=not _PROGRESS.value) as bar:
      try:
        loader.predict_stream(artifact, loader.read_texts(source, _FORMAT.value, _TEXT_KEY.value), sink.write,
                              batch_size=_BATCH_SIZE.value, chunk=_CHUNK.value, on_progress=bar.update)
      except loader.InputError as e:
        raise DataError(f'{_INPUT.value if _INPUT.value != "-" else "stdin"}: {e}') from None
      finally:
        sink.flush()
        if sink is not sys.stdout:
          sink.close()

  errors.exit_on_user_error(run, _VERBOSE.value)


def _check_output(path: str) -> None:
  """Opening --output truncates it: never the input being read, the artifact, or a run's own file."""
  out = os.path.realpath(path)
  if _INPUT.value != '-' and out == os.path.realpath(_INPUT.value):
    raise errors.ConfigError(f'--output={path} is --input: writing would erase the texts before they are read; '
                             'choose another --output')
  model = os.path.realpath(_MODEL.value)
  if os.path.commonpath([out, model]) == model:
    raise errors.ConfigError(f'--output={path} lies inside the artifact --model={_MODEL.value}; write it elsewhere')
  workdirs.check_report_file(path, '--output')


def _count_lines(path: str) -> int:
  """For the bar's total: a fast pass over the bytes (a JSONL file's blank lines are counted too)."""
  with open(path, 'rb') as f:
    return sum(block.count(b'\n') for block in iter(lambda: f.read(1 << 20), b''))


if __name__ == '__main__':
  flags.mark_flags_as_required(['model'])
  app.run(main, flags_parser=cli.parse_flags)
