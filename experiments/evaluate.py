"""Evaluates a trained run, or an ensemble of runs, on every example of a data file, from the
runs' folders alone.

  python -m experiments.evaluate --workdir=runs/mlp_sst2 --data=../shared/data/sst2/test.txt
  # An ensemble: the runs' probabilities averaged (ULMFiT's forward and backward classifiers).
  python -m experiments.evaluate --workdir=runs/ulmfit_imdb,runs/ulmfit_imdb_bwd \
      --data=../shared/data/imdb/aclImdb_v1.tar.gz

--data takes any format training reads (LABEL-text .txt, .tsv/.csv with a header, .jsonl;
a folder or the IMDB archive: its test split). Labels must be the run's classes (by name,
or by id for integer labels). Prints the report that results.json gives for test
(accuracy, macro-F1, per-class F1, confusion matrix, loss); --json_out also writes it.
--max_len=N reads at most N tokens of each text instead of the run's data.max_len: what
reading long texts whole (or cut short) changes for the same model.
The training data need not exist any more: the run's tokenizer, config and best
checkpoint are all it needs. With several runs the report is the ensemble's, and
`members` gives each run's own accuracy.
"""

from absl import app
from absl import flags

from bigjax import runs
from bigjax import workdirs
from bigjax.data import from_config
from bigjax.errors import ConfigError
from experiments import cli

_WORKDIR = flags.DEFINE_list('workdir', None, 'The trained run; several (comma-separated): their ensemble.')
_DATA = flags.DEFINE_string('data', None, 'A data file or folder to evaluate on.')
_ENCODING = flags.DEFINE_string('encoding', '', "The data's encoding (default: the run's data.encoding).")
_TEXT_COLUMN = flags.DEFINE_string('text_column', '', 'For .tsv/.csv/.jsonl (default: the run\'s).')
_LABEL_COLUMN = flags.DEFINE_string('label_column', '', 'For .tsv/.csv/.jsonl (default: the run\'s).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Examples per evaluation batch.')
_MAX_LEN = flags.DEFINE_integer('max_len', 0, "Tokens read of each text (0: the run's data.max_len).")
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also write the report here.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def main(argv):
  def run():
    workdirs.check_report_file(_JSON_OUT.value, '--json_out')
    members = [runs.load_run(workdir) for workdir in _WORKDIR.value]
    if _MAX_LEN.value:
      members = [member.with_max_len(_MAX_LEN.value) for member in members]
    flagged = {'encoding': _ENCODING.value, 'text_column': _TEXT_COLUMN.value, 'label_column': _LABEL_COLUMN.value}
    flagged = {key: value for key, value in flagged.items() if value}
    split = from_config.labelled_examples(members[0], _DATA.value, **flagged)
    if len(members) == 1:
      report = members[0].evaluate(split.texts, split.labels, _BATCH_SIZE.value)
      report.update(workdir=members[0].workdir, step=members[0].step, data=_DATA.value)
    else:
      settings = from_config.reading_settings(members[0], **flagged)
      for other in members[1:]:
        if other.label_names == members[0].label_names and from_config.reading_settings(other, **flagged) == settings:
          continue  # It would read the same examples: the file is not read again.
        theirs = from_config.labelled_examples(other, _DATA.value, **flagged)
        if theirs.texts != split.texts or list(theirs.labels) != list(split.labels):
          raise ConfigError(f'{other.workdir} reads {_DATA.value} otherwise than {members[0].workdir} '
                            '(data.text_form, encoding or columns differ): an ensemble needs the same examples')
      report = runs.ensemble_report(members, split.texts, split.labels, _BATCH_SIZE.value)
      report.update(data=_DATA.value)
    cli.print_report(report, _JSON_OUT.value)

  cli.run_tool(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'data'])
  app.run(main, flags_parser=cli.parse_flags)
