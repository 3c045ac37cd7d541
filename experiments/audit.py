"""Audits what a trained classifier gives away about its training set (bigjax/privacy/audit.py):
a loss-threshold membership-inference attack (training examples against test examples) and, if
the run inserted canaries (audit.canaries), their exposure. For private and non-private runs
alike: the table of docs/results/privacy.md is these reports side by side.

  python -m experiments.audit --workdir=runs/dp_mlp_sst2_eps8 --json_out=runs/dp_mlp_sst2_eps8/audit.json

Reads the run's data again as the run did (from the data cache when it is there).
"""

from absl import app
from absl import flags

from bigjax import runs
from bigjax import workdirs
from bigjax.config import schema
from bigjax.data import from_config
from bigjax.privacy import audit
from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_MAX_EXAMPLES = flags.DEFINE_integer('max_examples', 5000, 'Members and non-members scored (each at most).')
_REFERENCES = flags.DEFINE_integer('references', 1000, 'Reference sequences each canary is ranked among.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Examples per batch.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also write the report here.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def main(argv):
  def run():
    workdirs.check_report_file(_JSON_OUT.value, '--json_out')
    trained = runs.load_run(_WORKDIR.value)
    data = from_config.prepare_classification_data(schema.merged(trained.config), None, trained.tokenizer)
    report = audit.audit_run(trained, data.splits, max_examples=_MAX_EXAMPLES.value,
                             reference_count=_REFERENCES.value, batch_size=_BATCH_SIZE.value)
    cli.print_report(report, _JSON_OUT.value)

  cli.run_tool(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
