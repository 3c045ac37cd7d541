"""Evaluates a trained run on every example of a data file, from the run's folder alone.

  python -m experiments.evaluate --workdir=runs/mlp_sst2 --data=../shared/data/sst2/test.txt

--data takes any format training reads (LABEL-text .txt, .tsv/.csv with a header, .jsonl;
a folder or the IMDB archive: its test split). Labels must be the run's classes (by name,
or by id for integer labels). Prints the report that results.json gives for test
(accuracy, macro-F1, per-class F1, confusion matrix, loss); --json_out also writes it.
The training data need not exist any more: the run's tokenizer, config and best
checkpoint are all it needs.
"""

from absl import app
from absl import flags

from bigjax import runs
from experiments import common

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_DATA = flags.DEFINE_string('data', None, 'A data file or folder to evaluate on.')
_ENCODING = flags.DEFINE_string('encoding', '', "The data's encoding (default: the run's data.encoding).")
_TEXT_COLUMN = flags.DEFINE_string('text_column', '', 'For .tsv/.csv/.jsonl (default: the run\'s).')
_LABEL_COLUMN = flags.DEFINE_string('label_column', '', 'For .tsv/.csv/.jsonl (default: the run\'s).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Examples per evaluation batch.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also write the report here.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def main(argv):
  def run():
    trained = runs.load_run(_WORKDIR.value)
    flagged = {'encoding': _ENCODING.value, 'text_column': _TEXT_COLUMN.value, 'label_column': _LABEL_COLUMN.value}
    split = common.labelled_examples(trained, _DATA.value, **{key: value for key, value in flagged.items() if value})
    report = trained.evaluate(split.texts, split.labels, _BATCH_SIZE.value)
    report.update(workdir=trained.workdir, step=trained.step, data=_DATA.value)
    common.print_report(report, _JSON_OUT.value)

  common.run_tool(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'data'])
  app.run(main, flags_parser=common.parse_flags)
