"""Explains a trained run's predictions: which tokens pushed it to its label, and how faithful that is.

  python -m experiments.explain --workdir=runs/mlp_sst2 --text "a gorgeous, witty, seductive movie ."
  python -m experiments.explain --workdir=runs/mlp_sst2 --file=texts.txt --html=report.html --json=out.jsonl
  python -m experiments.explain --workdir=runs/lstm --data=../shared/data/sst2/test.txt --show=0 \
      --html=sst2_lstm.html --summary_json=summary.json

--text (repeatable), --file (one text per line) and --data (a labelled file, any format
training reads; its labels are shown beside the predictions) can be combined. Prints each
text's prediction and its tokens shaded by attribution (blue: for the predicted label, red:
against), then integrated gradients' completeness error and, over all texts, the
faithfulness table (ERASER comprehensiveness / sufficiency AOPC, deletion curve, random
scores as the floor). --html writes a self-contained page, --json one JSON line per text,
--summary_json the completeness statistics and the faithfulness table. docs/guides/attributions.md.

A text the run's tokenizer reads no tokens in (empty, blank, only whitespace) has nothing to
attribute: it is skipped and named (--text='...', FILE:LINE or DATA example N) in a line before
the summary, which covers only the texts explained; if no text has a token, that is an error.
"""
import json
import sys

from absl import app
from absl import flags

from bigjax import errors
from bigjax import runs
from bigjax import workdirs
from bigjax.data import from_config
from bigjax.interpret import attributions, explanations, render
from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_TEXT = flags.DEFINE_multi_string('text', [], 'A text to explain (repeatable).')
_FILE = flags.DEFINE_string('file', '', 'A file of texts to explain, one per line (blank lines skipped and named).')
_DATA = flags.DEFINE_string('data', '', 'A labelled data file or folder (as experiments.evaluate reads).')
_LIMIT = flags.DEFINE_integer('limit', 0, 'Explain only the first N texts with tokens (0: all).')
_METHODS = flags.DEFINE_list('methods', list(attributions.METHODS), 'Attribution methods.')
_STEPS = flags.DEFINE_integer('steps', 64, "Integrated gradients' interpolation steps.")
_BASELINE = flags.DEFINE_enum('baseline', 'zeros', attributions.BASELINES, 'What the path starts from.')
_OUTPUT = flags.DEFINE_enum('output', 'log_odds', attributions.OUTPUTS,
                            "What is attributed: the predicted label's log-odds, logit or probability.")
_RULE = flags.DEFINE_enum('rule', 'gauss_legendre', attributions.RULES, 'Quadrature of the path integral.')
_FLOAT32 = flags.DEFINE_bool('float32', False, 'Compute in float32 even where the model computes in bf16.')
_FAITHFULNESS = flags.DEFINE_bool('faithfulness', True, 'Compute the faithfulness table over the texts.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random attributions (the faithfulness floor).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Texts per attribution call (each with --steps points).')
_SHOW = flags.DEFINE_integer('show', 20, 'Print at most this many texts (-1: all).')
_COLOR = flags.DEFINE_enum('color', 'auto', ['auto', 'always', 'never'], 'ANSI colours (auto: on a terminal).')
_HTML = flags.DEFINE_string('html', '', 'Write a self-contained HTML report here.')
_JSON = flags.DEFINE_string('json', '', 'Write one JSON line per text here.')
_SUMMARY_JSON = flags.DEFINE_string('summary_json', '', 'Write the completeness summary and faithfulness table here.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def _short(text: str, width: int = 40) -> str:
  return repr(text if len(text) <= width else text[:width - 1] + '…')


def _texts(trained):
  """The texts to explain, their gold labels (None where unlabelled) and where each came from."""
  texts, gold = list(_TEXT.value), [None] * len(_TEXT.value)
  sources = [f'--text={_short(t)}' for t in texts]
  if _FILE.value:
    try:
      with open(_FILE.value, encoding=trained.data['encoding']) as f:
        lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as e:
      raise errors.ConfigError(f'--file={_FILE.value}: cannot read it ({e}); give a text file, one text per line')
    if not lines and not texts and not _DATA.value:
      raise errors.ConfigError(f'nothing to explain: --file={_FILE.value} is empty')
    # Blank lines stay in, with their line numbers, so that they are named where they are skipped.
    texts, gold = texts + lines, gold + [None] * len(lines)
    sources += [f'{_FILE.value}:{n}' for n in range(1, len(lines) + 1)]
  if _DATA.value:
    split = from_config.labelled_examples(trained, _DATA.value)
    texts, gold = texts + list(split.texts), gold + [int(label) for label in split.labels]
    sources += [f'{_DATA.value} example {n}' for n in range(1, len(split.texts) + 1)]
  if not texts:
    raise errors.ConfigError('nothing to explain: give --text="...", --file=TEXTS.txt or --data=LABELLED_FILE')
  return texts, gold, sources


def _with_tokens(trained, texts, gold, sources):
  """The texts with tokens (explanations.with_tokens), their gold labels, and the sources of
  those skipped; an error if none has a token."""
  kept, skipped = explanations.with_tokens(trained.encode(texts), _LIMIT.value)
  skipped_sources = [sources[i] for i in skipped]
  if not kept:
    if not _TEXT.value and not _DATA.value:  # All from --file: name the file (its lines are in it).
      raise errors.ConfigError(f'nothing to explain: --file={_FILE.value} has no line with a token (each of its '
                               f'{len(texts)} lines is blank or has only what the tokenizer drops)')
    if len(skipped) == 1:
      raise errors.ConfigError(f'nothing to explain: {skipped_sources[0]} has no tokens')
    raise errors.ConfigError(f'nothing to explain: none of the {len(skipped)} texts has a token (each is blank '
                             f'or has only what the tokenizer drops): {explanations.named(skipped_sources)}')
  return [texts[i] for i in kept], [gold[i] for i in kept], skipped_sources


def main(argv):
  def run():
    if _BATCH_SIZE.value < 1:
      raise errors.ConfigError(f'--batch_size={_BATCH_SIZE.value} must be at least 1')
    for flag, path in (('--html', _HTML.value), ('--json', _JSON.value), ('--summary_json', _SUMMARY_JSON.value)):
      workdirs.check_report_file(path, flag)
    trained = runs.load_run(_WORKDIR.value)
    texts, gold, skipped = _with_tokens(trained, *_texts(trained))
    fns = explanations.float32_fns(trained) if _FLOAT32.value else trained.fns
    attributor = attributions.Attributor(fns, trained.params, steps=_STEPS.value, baseline=_BASELINE.value,
                                         output=_OUTPUT.value, rule=_RULE.value)
    explained = explanations.explain_texts(trained, texts, attributor=attributor, methods=_METHODS.value,
                                           batch_size=_BATCH_SIZE.value, gold=gold)
    completeness = explanations.completeness_summary(explained)
    table = (explanations.faithfulness_table(trained, explained, attributor=attributor, seed=_SEED.value)
             if _FAITHFULNESS.value else None)
    color = _COLOR.value == 'always' or (_COLOR.value == 'auto' and sys.stdout.isatty())
    shown = explained if _SHOW.value < 0 else explained[:_SHOW.value]
    for e in shown:
      print(render.terminal(e, _METHODS.value[0], color=color, gold_names=trained.label_names))
    if skipped:
      print(f'skipped {len(skipped)} text{"s" if len(skipped) > 1 else ""} with no tokens (nothing to '
            f'attribute): {explanations.named(skipped)}')
    summary = {'workdir': trained.workdir, 'step': trained.step, 'texts': len(explained), 'skipped': skipped,
               'settings': {**attributor.settings, 'float32': _FLOAT32.value, 'methods': _METHODS.value},
               'completeness': completeness, 'faithfulness': table}
    print(render.summary_lines(summary))
    meta = {'run': trained.workdir, 'step': trained.step, 'model': trained.model_name,
            **{k: v for k, v in summary['settings'].items() if k != 'methods'}}
    if _HTML.value:
      with open(_HTML.value, 'w', encoding='utf-8') as f:
        f.write(render.html_page(explained, meta=meta, faithfulness_table=table, completeness=completeness,
                                 gold_names=trained.label_names, skipped=skipped))
    if _JSON.value:
      with open(_JSON.value, 'w', encoding='utf-8') as f:
        for e in explained:
          f.write(json.dumps(e.to_json(), ensure_ascii=False) + '\n')
    if _SUMMARY_JSON.value:
      with open(_SUMMARY_JSON.value, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=1)

  cli.run_tool(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
