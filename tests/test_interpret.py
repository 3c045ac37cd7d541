"""Attributions: completeness, padding, ignored tokens, batch invariance, an independent IG, faithfulness,
the explain entry point and its HTML report in a real (headless) browser."""
import ast
import functools
import json
import pathlib
import re
import shutil
import subprocess
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import runs
from bigjax import training
from bigjax.errors import ConfigError
from bigjax.interpret import attributions as attr_lib
from bigjax.interpret import explanations, faithfulness, render
from bigjax.models import mlp, registry
from bigjax.types import ModelFns
from test_train import ROOT, tiny_config, write_corpus
from tests.entry_points import run_module

VOCAB = 30
WIDTH = 12  # One shape [4, WIDTH] for most checks: each method compiles once per model (plus [4, 16]).
KINDS = ('mlp_bigrams', 'lstm')  # The MLP with hashed bigrams covers the plain one (and slot folding).
# The Transformer too where its cost allows (each shape compiles for seconds) and nothing needs a first
# layer that ignores some dimensions (its LayerNorm mixes them all).
ALL_KINDS = KINDS + ('transformer',)


@functools.lru_cache(maxsize=None)
def tiny_model(kind: str, seed: int = 0):
  """(fns, params) of a randomly initialised tiny classifier (embed 8, hidden 8, 3 classes).

  Cached: the same fns object lets every test reuse the compiled methods (attributions caches
  them per model).
  """
  section = {'name': 'mlp' if kind == 'mlp_bigrams' else kind, 'embed_dim': 8, 'dropout': 0.0,
             'mlp': {'hidden_dim': 8, 'num_layers': 1, 'word_dropout': 0.0, 'bigram_buckets': 0},
             'lstm': {'hidden_dim': 8, 'num_layers': 1, 'bidirectional': False, 'forget_bias': 0.0,
                      'dtype': 'float32', 'tie_embeddings': False},
             # Weights of std 0.5, not BERT's 0.02: a random model whose logits differ between texts.
             'transformer': dict(registry.spec('transformer').defaults(), num_layers=1, num_heads=2,
                                 intermediate_dim=16, max_positions=16, pooling='mean', init_std=0.5)}
  section['mlp']['bigram_buckets'] = 16 if kind == 'mlp_bigrams' else 0
  fns = registry.model_fns(registry.from_section(section, vocab_size=VOCAB, num_classes=3))
  # Jitted: op by op, the Transformer's init takes seconds.
  params = jax.jit(fns.init)(jax.random.PRNGKey(seed), np.zeros((1, 8), np.int32), np.ones(1, np.int32))
  return fns, jax.device_get(params)


def tiny_rows(seed: int = 0):
  rng = np.random.default_rng(seed)
  return [rng.integers(1, VOCAB, n).astype(np.int32) for n in (5, 3, 8, 1)]


def padded(rows, width):
  ids = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
  return ids, np.array([len(r) for r in rows], np.int32)


@pytest.mark.parametrize('kind', ALL_KINDS)
def test_completeness_on_tiny_models(kind):
  fns, params = tiny_model(kind)
  ids, lengths = padded(tiny_rows(), WIDTH)
  targets = np.array([0, 1, 2, 1], np.int32)
  for baseline in attr_lib.BASELINES:
    # Gauss-Legendre's points crowd the ends of the path: on the MLP's piecewise-linear path (its
    # ReLUs) it can miss the kinks in between, and 1 % takes more than 64 points (docs/results/attributions.md).
    for rule in {'mlp_bigrams': ('midpoint',), 'lstm': attr_lib.RULES, 'transformer': ('gauss_legendre',)}[kind]:
      attributor = attr_lib.Attributor(fns, params, steps=64, baseline=baseline, rule=rule)
      result = attributor.integrated_gradients(ids, lengths, targets)
      delta = np.abs(result.f_x - result.f_baseline)
      assert np.all(delta > 1e-3)  # Otherwise the check below says nothing.
      assert np.all(result.error <= 0.01 * delta), (baseline, rule, result.error, delta)
      np.testing.assert_allclose(result.attributions.sum(1), result.f_x - result.f_baseline, atol=0.01 * delta.max())
      if kind != 'mlp_bigrams' and rule == 'gauss_legendre':  # A smooth path: far inside 1 %.
        assert np.all(result.error <= 1e-4 * delta), (baseline, result.error, delta)
      if kind == 'transformer':  # Its positions are gathered for the width: wider padding changes nothing.
        wider = attributor.integrated_gradients(*padded(tiny_rows(), 16), targets)
        np.testing.assert_allclose(wider.attributions[:, :WIDTH], result.attributions, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('kind', ALL_KINDS)
def test_padding_positions_get_zero_attribution(kind):
  fns, params = tiny_model(kind)
  ids, lengths = padded(tiny_rows(), WIDTH)
  targets = np.array([1, 0, 2, 1], np.int32)
  pad = np.arange(WIDTH)[None, :] >= lengths[:, None]
  for baseline in attr_lib.BASELINES:
    attributor = attr_lib.Attributor(fns, params, baseline=baseline)
    for method in attr_lib.METHODS:
      scores = attributor.attribute(method, ids, lengths, targets)
      assert np.all(scores[pad] == 0.0), (method, baseline, scores[pad])  # Exactly, not nearly.
      assert np.any(scores[~pad] != 0.0), (method, baseline)


@pytest.mark.parametrize('kind', KINDS)
def test_a_token_the_model_ignores_gets_zero_occlusion_score(kind):
  """Token 7's vectors (its own, and for the MLP the bigrams it is part of) live only in two
  dimensions the first layer has zero weights for."""
  fns, params = tiny_model(kind)
  params = jax.tree.map(np.array, params)
  rows = [np.array([3, 7, 12, 7, 5], np.int32), np.array([7, 9, 4], np.int32), np.array([2, 8], np.int32),
          np.array([7], np.int32)]
  ids, lengths = padded(rows, WIDTH)
  first = params['hidden_0'] if kind == 'mlp_bigrams' else params['layers_0_0']
  first['kernel' if kind == 'mlp_bigrams' else 'kernel_i'][:2] = 0.0
  ignorable = [(params['embedding']['embedding'], [7])]
  if kind == 'mlp_bigrams':
    pairs = np.asarray(mlp.bigram_ids(ids, 16))
    with_7 = (ids == 7) | (np.pad(ids[:, 1:], ((0, 0), (0, 1))) == 7)
    ignorable.append((params['bigram_embedding']['embedding'], np.unique(pairs[with_7])))
  for table, which in ignorable:
    table[which, 2:] = 0.0
    table[which, :2] = [3.0, -2.0]  # Not zero: the model has something to ignore.
  targets = np.array([0, 2, 1, 1], np.int32)
  attributor = attr_lib.Attributor(fns, params, baseline='zeros')
  scores = attributor.attribute('occlusion', ids, lengths, targets)
  ignored = ids == 7
  assert np.all(scores[ignored] == 0.0), scores
  real = np.arange(WIDTH)[None, :] < lengths[:, None]
  assert np.all(np.abs(scores[real & ~ignored]) > 0), scores  # The other tokens matter.
  # The gradient methods agree: nothing flows through those two dimensions.
  for method in ('integrated_gradients', 'gradient_x_input'):
    np.testing.assert_allclose(attributor.attribute(method, ids, lengths, targets)[ignored], 0.0, atol=1e-7)


@pytest.mark.parametrize('kind', KINDS)  # The Transformer's width: test_completeness_on_tiny_models.
def test_attributions_are_invariant_to_batch_composition_and_padding_width(kind):
  fns, params = tiny_model(kind)
  attributor = attr_lib.Attributor(fns, params)
  rows = tiny_rows()
  # Each row alone (with 3 filler rows) padded to 16, against all of them among others at WIDTH.
  alone = [explanations.explain_rows(attributor, [r], widths=[16], batch_size=4) for r in rows]
  together = explanations.explain_rows(attributor, tiny_rows(seed=1)[:2] + rows, widths=[WIDTH], batch_size=4)
  together = {k: v[2:] for k, v in together.items()}
  for i, one in enumerate(alone):
    assert together['targets'][i] == one['targets'][0]
    np.testing.assert_allclose(together['probabilities'][i], one['probabilities'][0], rtol=1e-5, atol=1e-7)
    for method in attr_lib.METHODS:
      np.testing.assert_allclose(together[method][i], one[method][0], rtol=1e-4, atol=1e-6, err_msg=method)
    np.testing.assert_allclose(together['ig'][i], one['ig'][0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('kind', KINDS)
def test_integrated_gradients_match_pair_saliency(kind):
  """PAIR's `saliency` core integrates the gradient itself (its own path and Riemann sum); we
  hand it only the model's gradient at the points it asks for."""
  saliency = pytest.importorskip('saliency.core')
  fns, params = tiny_model(kind)
  rows = tiny_rows(seed=2)
  width = WIDTH
  ids, lengths = padded(rows, width)
  targets = np.array([2, 0, 1, 1], np.int32)
  ours = attr_lib.Attributor(fns, params, steps=64).integrated_gradients(ids, lengths, targets).attributions

  @jax.jit
  def gradients(points, lengths, targets):
    f = lambda e: jnp.sum(attr_lib.attributed(fns.logits_from_embeddings(params, e, lengths), targets, 'log_odds'))
    return jax.grad(f)(points)

  for b in range(len(rows)):
    x = np.asarray(fns.embed(params, ids[b:b + 1]))[0]  # float32[S, E]

    def call_model(points, call_model_args=None, expected_keys=None, b=b):
      del call_model_args, expected_keys
      n = len(points)
      g = gradients(jnp.asarray(points, jnp.float32), jnp.full(n, lengths[b]), jnp.full(n, targets[b]))
      return {saliency.INPUT_OUTPUT_GRADIENTS: np.asarray(g)}

    mask = saliency.IntegratedGradients().GetMask(x, call_model, x_baseline=np.zeros_like(x), x_steps=2001,
                                                  batch_size=667)
    theirs = mask.sum(-1) @ np.asarray(fns.slot_tokens(width))
    # Both are quadratures of one integral (ours: 64 Gauss-Legendre points; theirs: 2001 equally spaced
    # points, ends included), so they agree to a small part of the attributions' scale.
    np.testing.assert_allclose(ours[b], theirs, atol=2e-3 * np.abs(ours).max(), err_msg=f'row {b}')


def test_faithfulness_against_a_known_model():
  """p(class 1) = sigmoid(sum of the tokens' weights): the weights rank tokens perfectly."""
  weights = np.linspace(-2, 2, VOCAB)

  def probabilities(ids, lengths):
    mask = np.arange(ids.shape[1])[None] < lengths[:, None]
    p1 = 1 / (1 + np.exp(-np.where(mask, weights[ids], 0).sum(1)))
    return np.stack([1 - p1, p1], 1)

  rows = [np.random.default_rng(i).integers(20, VOCAB, 10).astype(np.int32) for i in range(30)]  # All positive.
  targets = [1] * len(rows)
  table = faithfulness.evaluate(probabilities, rows, targets, {'oracle': [weights[r] for r in rows]},
                                batch_size=8, widths=[4, 8, 16])
  oracle, chance = table['methods']['oracle'], table['methods']['random']
  assert table['examples'] == 30 and table['fractions'] == [0.01, 0.05, 0.1, 0.2, 0.5]
  # By hand for the first text at 50 %: its top 5 tokens deleted, or kept alone.
  row, top = rows[0], faithfulness.ranking(weights[rows[0]])[:5]
  p = lambda r: probabilities(r[None], np.array([len(r)]))[0, 1]
  kept = np.setdiff1d(np.arange(10), top)
  perturbed = faithfulness.variants(row, weights[row])
  np.testing.assert_array_equal(perturbed[4], row[kept])
  np.testing.assert_array_equal(perturbed[9], row[np.sort(top)])
  assert faithfulness.top_count(10, 0.01) == 1 and faithfulness.top_count(19, 0.5) == 10
  assert len(perturbed[-1]) == 0 and len(perturbed[len(faithfulness.FRACTIONS) * 2]) == 10
  assert p(row) - p(row[kept]) > 0
  assert oracle['comprehensiveness_aopc'] > chance['comprehensiveness_aopc']
  assert oracle['sufficiency_aopc'] < chance['sufficiency_aopc']
  assert oracle['deletion_auc'] < chance['deletion_auc']
  assert oracle['vs_random']['comprehensiveness_aopc']['ci95'][0] > 0
  assert oracle['deletion_curve'][0] == pytest.approx(table['full_probability'])


def test_faithfulness_of_no_texts_with_tokens_or_of_one_text_has_no_nan():
  """Means over no texts, or an interval from one, would be NaN (with numpy's warnings); NaN is not JSON."""
  probabilities = lambda ids, lengths: np.tile([[0.3, 0.7]], (len(ids), 1))
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # numpy's 'Mean of empty slice' fails the test.
    empty = faithfulness.evaluate(probabilities, [np.zeros(0, np.int32)] * 2, [1, 0],
                                  {'m': [np.zeros(0, np.float32)] * 2}, widths=[4])
    one = faithfulness.evaluate(probabilities, [np.array([3, 4], np.int32), np.zeros(0, np.int32)], [1, 1],
                                {'m': [np.array([1.0, 0.0]), np.zeros(0)]}, widths=[4])
  assert empty['examples'] == 0 and empty['methods'] == {} and empty['full_probability'] is None
  assert one['examples'] == 1 and one['methods']['m']['vs_random']['comprehensiveness_aopc']['ci95'] is None
  for table in (empty, one):
    json.dumps(table, allow_nan=False)  # Raises on NaN.
  assert render.summary_lines({'faithfulness': empty}) == ('faithfulness: no text with tokens to delete '
                                                           '(nothing to measure)')
  page = render.html_page([], faithfulness_table=one)
  assert '(one text: no interval)' in page and not re.search(r'\bnan\b', page, re.IGNORECASE)


def test_bad_settings_are_config_errors():
  fns, params = tiny_model('mlp')
  for kwargs, expected in [({'steps': 0}, 'steps=0'), ({'baseline': 'mean'}, 'baseline'),
                           ({'output': 'loss'}, 'output'), ({'rule': 'simpson'}, 'rule')]:
    with pytest.raises(ConfigError, match=expected):
      attr_lib.Attributor(fns, params, **kwargs)
  with pytest.raises(ConfigError, match='unknown'):
    explanations.explain_rows(attr_lib.Attributor(fns, params), tiny_rows(), widths=[8], methods=['lime'])


def imported_modules(path: pathlib.Path) -> list[str]:
  """The modules a Python file names in an import statement (absolute names; anywhere in it)."""
  names = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level:
      names.append(node.module or '')
  return names


def _is_under(name: str, packages: tuple) -> bool:
  return any(name == p or name.startswith(p + '.') for p in packages)


def test_interpret_imports_no_data_sources_training_or_checkpoints():
  """bigjax/interpret must not import data sources, train, checkpoint (the dependency direction,
  docs/guides/contributing.md)."""
  banned = ('bigjax.data', 'bigjax.train', 'bigjax.checkpoint', 'bigjax.runs', 'orbax', 'experiments')
  for path in pathlib.Path(ROOT, 'bigjax', 'interpret').glob('*.py'):
    for name in imported_modules(path):
      assert not name.startswith(banned), f'{path.name} imports {name}'


def test_library_imports_no_commands_or_benchmarks():
  """The library (bigjax/, the only package installed) stands alone: no module of it imports
  the user's commands (experiments/) or the lab (benchmarks/), which run from the checkout;
  not by an import statement, importlib/__import__ with a literal name, or `python -m X` argv."""
  banned = ('experiments', 'benchmarks')
  paths = sorted(pathlib.Path(ROOT, 'bigjax').rglob('*.py'))
  assert len(paths) > 40  # The whole library, not an empty glob.
  found = []
  for path in paths:
    where = path.relative_to(ROOT)
    found += [f'{where} imports {name}' for name in imported_modules(path) if _is_under(name, banned)]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, 'id', '')
        if func in ('import_module', '__import__') and _is_under(str(node.args[0].value), banned):
          found.append(f'{where}:{node.lineno} {func}({node.args[0].value!r})')
      if isinstance(node, (ast.List, ast.Tuple)):
        strings = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
        for flag, module in zip(strings, strings[1:]):
          if flag == '-m' and isinstance(module, str) and _is_under(module, banned):
            found.append(f'{where}:{node.lineno} runs -m {module}')
  assert not found, found


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  """A tiny MLP with hashed bigrams, trained on a corpus whose labels the cue words give away."""
  folder = tmp_path_factory.mktemp('interpret')
  data = write_corpus(folder / 'data', sizes=(320, 40, 40))
  config = tiny_config(data, 'mlp', **{'model.mlp.bigram_buckets': 64, 'train.steps': 40, 'data.max_len': 16,
                                       'data.smallest_bucket': 16, 'checkpoint.every_steps': 40,
                                       'train.log_every_steps': 40, 'data.tokenizer': 'word'})
  training.run_training(config, str(folder / 'run'))
  return runs.load_run(str(folder / 'run'))


TEXTS = ['the movie was great and superb', 'a dull and boring plot', 'the acting was lovely but the story weak']


def test_explanations_of_a_trained_run_are_complete_and_faithful(trained_run):
  attributor = attr_lib.Attributor(trained_run.fns, trained_run.params, steps=64)
  explained = explanations.explain_texts(trained_run, TEXTS * 10, attributor=attributor)
  assert [e.label_name for e in explained[:2]] == ['1', '0']
  # Each text's error is what it says; the median is well inside 1 % (a ReLU MLP's worst case
  # is not, at 64 points: docs/results/attributions.md).
  assert np.median([e.completeness['relative_error'] for e in explained]) <= 0.01
  for e in explained:
    c, ig = e.completeness, e.attributions['integrated_gradients']
    assert abs(abs(np.sum(ig) - (c['f_x'] - c['f_baseline'])) - c['error']) < 1e-5
    assert set(e.attributions) == set(attr_lib.METHODS)
    assert all(len(a) == len(e.tokens) for a in e.attributions.values())
  top = explained[1].tokens[int(np.argmax(explained[1].attributions['integrated_gradients']))]
  assert top in ('dull', 'boring')  # A cue word carries the prediction.
  table = explanations.faithfulness_table(trained_run, explained, attributor=attributor)
  for method in attr_lib.METHODS:
    assert table['methods'][method]['comprehensiveness_aopc'] > table['methods']['random']['comprehensiveness_aopc']
  line = render.terminal(explained[0], color=True)
  assert 'predicted: 1' in line and '\x1b[48;2;' in line and 'great' in line
  assert 'great[+' in render.terminal(explained[0], color=False)


def explain_cli(*args):
  return run_module('experiments.explain', args, timeout=300)


def test_explain_entry_point_writes_terminal_html_and_json(trained_run, tmp_path):
  texts = tmp_path / 'texts.txt'
  texts.write_text('a dull and boring plot\n\nthe acting was lovely\n', encoding='utf-8')
  out_html, out_json, summary = tmp_path / 'report.html', tmp_path / 'out.jsonl', tmp_path / 'summary.json'
  done = explain_cli(f'--workdir={trained_run.workdir}', '--text=the movie was great and superb', f'--file={texts}',
                     f'--html={out_html}', f'--json={out_json}', f'--summary_json={summary}', '--color=always',
                     '--steps=64')
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.count('predicted: ') == 3 and '\x1b[48;2;' in done.stdout and 'random' in done.stdout
  records = [json.loads(line) for line in out_json.read_text().splitlines()]
  assert [r['text'] for r in records] == ['the movie was great and superb', 'a dull and boring plot',
                                          'the acting was lovely']
  for r in records:
    assert set(r['attributions']) == set(attr_lib.METHODS)
    assert all(len(a) == len(r['tokens']) for a in r['attributions'].values())
    assert r['label'] in ('0', '1') and 0.5 <= r['probability'] <= 1
    c, ig = r['completeness'], r['attributions']['integrated_gradients']
    assert c['error'] == pytest.approx(abs(sum(ig) - (c['f_x'] - c['f_baseline'])), abs=1e-5)
  page = out_html.read_text(encoding='utf-8')
  for fetches in ('<script', '<link', 'src=', 'url(', '@import'):  # Self-contained: loads nothing.
    assert fetches not in page
  assert 'comprehensiveness AOPC' in page and page.count('class="example"') == 3
  assert json.loads(summary.read_text())['faithfulness']['examples'] == 3
  missing = explain_cli(f'--workdir={trained_run.workdir}')
  assert missing.returncode == 2 and missing.stderr.strip().count('\n') == 0
  assert 'nothing to explain' in missing.stderr


def _no_warnings_nan_or_traceback(done):
  assert 'Traceback' not in done.stderr and 'RuntimeWarning' not in done.stderr, done.stderr[-2000:]
  assert 'Mean of empty slice' not in done.stderr
  assert not re.search(r'\bnan\b', done.stdout, re.IGNORECASE), done.stdout


def test_explain_entry_point_on_texts_without_tokens(trained_run, tmp_path):
  """Texts the tokenizer reads nothing in (empty, blank, whitespace): nothing to attribute.

  Alone they are an error naming them; among texts with tokens they are skipped, named
  (--text='...' or FILE:LINE), and left out of the summaries, which never show NaN.
  """
  workdir = f'--workdir={trained_run.workdir}'
  blank = tmp_path / 'blank.txt'
  blank.write_text('\n   \n\u3000\n', encoding='utf-8')
  for args, expected in [(['--text='], "nothing to explain: --text='' has no tokens"),
                         (['--text= \t'], "nothing to explain: --text=' \\t' has no tokens"),
                         ([f'--file={blank}'], f'nothing to explain: --file={blank} has no line with a token '
                                               '(each of its 3 lines is blank')]:
    done = explain_cli(workdir, *args)
    assert done.returncode == 2, (args, done.stderr[-2000:])
    assert done.stderr.count('\n') == 1 and done.stderr.startswith(f'error: {expected}'), (args, done.stderr)
    assert done.stdout == ''
    _no_warnings_nan_or_traceback(done)
  some = tmp_path / 'some.txt'
  some.write_text('a dull and boring plot\n\n   \nthe acting was lovely\n', encoding='utf-8')
  summary, out_json, out_html = tmp_path / 'summary.json', tmp_path / 'out.jsonl', tmp_path / 'report.html'
  done = explain_cli(workdir, '--text=  ', f'--file={some}', '--color=never', '--steps=8',
                     f'--summary_json={summary}', f'--json={out_json}', f'--html={out_html}')
  assert done.returncode == 0, done.stderr[-2000:]
  _no_warnings_nan_or_traceback(done)
  assert done.stdout.count('predicted: ') == 2
  assert (f"skipped 3 texts with no tokens (nothing to attribute): --text='  ', {some}:2, {some}:3\n"
          in done.stdout)
  assert 'integrated gradients, 2 texts: completeness' in done.stdout
  assert 'faithfulness over 2 texts' in done.stdout
  report = json.loads(summary.read_text(), parse_constant=lambda c: pytest.fail(f'{c} in the summary'))
  assert report['texts'] == 2 and report['faithfulness']['examples'] == 2
  assert report['skipped'] == ["--text='  '", f'{some}:2', f'{some}:3']
  assert [json.loads(line)['text'] for line in out_json.read_text().splitlines()] == [
      'a dull and boring plot', 'the acting was lovely']
  page = out_html.read_text(encoding='utf-8')
  assert page.count('class="example"') == 2 and f'{some}:3' in page
  assert not re.search(r'\bnan\b', page, re.IGNORECASE)


def _chromium():
  return next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)


def test_html_report_renders_in_headless_chromium(request, tmp_path):
  browser = _chromium()
  if browser is None:
    pytest.skip('no chromium on PATH: `apt-get install -y chromium` (Debian) to run the browser check; .ci/run does')
  image = pytest.importorskip('PIL.Image', reason='Pillow (a dependency of the test extra\'s saliency) reads '
                                                  'the screenshot')
  trained_run = request.getfixturevalue('trained_run')  # Only once the browser is known to be there.
  attributor = attr_lib.Attributor(trained_run.fns, trained_run.params, steps=64)
  explained = explanations.explain_texts(trained_run, TEXTS, attributor=attributor)
  table = explanations.faithfulness_table(trained_run, explained, attributor=attributor)
  page = tmp_path / 'report.html'
  page.write_text(render.html_page(explained, faithfulness_table=table,
                                   completeness=explanations.completeness_summary(explained)), encoding='utf-8')
  flags = ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', f'--user-data-dir={tmp_path / "p"}']
  dom = subprocess.run([browser, *flags, '--dump-dom', page.as_uri()], capture_output=True, text=True, timeout=120)
  assert dom.returncode == 0, dom.stderr[-2000:]
  # What the browser built from the page: the headline, the tokens in their own elements, the table.
  assert 'predicted: <span class="label">1</span> (p = ' in dom.stdout
  assert '>great</span>' in dom.stdout and '>boring</span>' in dom.stdout
  assert 'comprehensiveness AOPC' in dom.stdout and '<svg' in dom.stdout
  shot = tmp_path / 'shot.png'
  done = subprocess.run([browser, *flags, f'--screenshot={shot}', '--window-size=1000,1400', page.as_uri()],
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
  pixels = np.asarray(image.open(shot).convert('RGB')).reshape(-1, 3).astype(int)
  blueish = (pixels[:, 2] - pixels[:, 0] > 60).sum()  # Tokens for the prediction are shaded blue,
  reddish = (pixels[:, 0] - pixels[:, 2] > 60).sum()  # those against it red.
  assert blueish > 500 and reddish > 100, (blueish, reddish)


def test_a_smooth_mlp_meets_completeness_far_inside_one_percent_with_gauss_legendre():
  # GELU instead of ReLU: no kinks on the path, so 64 Gauss-Legendre points integrate it to
  # ~1e-5 of |f(x) - f(x')| (the SST-2 MLP's worst text: 0.0019 %, docs/results/attributions.md).
  section = {'name': 'mlp', 'embed_dim': 8, 'dropout': 0.0,
             'mlp': {'hidden_dim': 8, 'num_layers': 2, 'word_dropout': 0.0, 'bigram_buckets': 16,
                     'activation': 'gelu'}}
  fns = registry.model_fns(registry.from_section(section, vocab_size=VOCAB, num_classes=3))
  params = fns.init(jax.random.PRNGKey(3), np.zeros((1, 8), np.int32), np.ones(1, np.int32))
  params = jax.tree.map(lambda p: 3.0 * p, params)  # Larger weights: a curved, not a near-linear, path.
  ids, lengths = padded(tiny_rows(), WIDTH)
  targets = np.array([0, 1, 2, 1], np.int32)
  for baseline in attr_lib.BASELINES:
    result = attr_lib.Attributor(fns, params, steps=64, baseline=baseline).integrated_gradients(ids, lengths, targets)
    delta = np.abs(result.f_x - result.f_baseline)
    assert np.all(delta > 1e-3)
    assert np.all(result.error <= 1e-4 * delta), (baseline, result.error, delta)
    # The midpoint rule on the same path is far less exact: the test can tell the rules apart.
    midpoint = attr_lib.Attributor(fns, params, steps=64, baseline=baseline, rule='midpoint')
    assert np.max(midpoint.integrated_gradients(ids, lengths, targets).error / delta) > 1e-4


# A classifier with a near-step on its path, in closed form: the log-odds of class 1 are
# g(x) = 5 tanh(K (Σx - 1)) + 0.1 Σ_t x_t0, over the sum of every embedding value. From the
# zero baseline, Σ(αx) crosses 1 at α* = 1 / Σx (between 0.08 and 0.67 here) within ~1 / (K Σx):
# a step ~1e-4 wide, the shape of a bistable LSTM near the zero input (docs/results/attributions.md).
STEP_SHARPNESS = 2000.0


def _step_embed(params, token_ids):
  return params['table'][token_ids] * (token_ids > 0)[..., None]


def _step_logits_from_embeddings(params, embeddings, lengths, dropout_key=None):
  del params, lengths, dropout_key
  total = jnp.sum(embeddings, axis=(1, 2))
  g = 5.0 * jnp.tanh(STEP_SHARPNESS * (total - 1.0)) + 0.1 * jnp.sum(embeddings[..., 0], axis=1)
  return jnp.stack([jnp.zeros_like(g), g], axis=1)


STEP_FNS = ModelFns(
    init=lambda *args: {'table': jnp.linspace(0.3, 0.8, VOCAB)[:, None] * jnp.array([1.0, 0.5])},
    logits=lambda params, ids, lengths, dropout_key=None: _step_logits_from_embeddings(
        params, _step_embed(params, ids), lengths),
    embed=_step_embed, logits_from_embeddings=_step_logits_from_embeddings,
    slot_tokens=lambda width: jnp.eye(width, dtype=jnp.float32))


def step_rows():
  rng = np.random.default_rng(2)
  return [rng.integers(1, VOCAB, n).astype(np.int32) for n in (6, 4, 9, 5)]


def test_the_adaptive_rule_finds_a_near_step_that_fixed_rules_miss():
  params = STEP_FNS.init()
  rows = step_rows()
  ids, lengths = padded(rows, WIDTH)
  targets = np.ones(len(rows), np.int32)
  x = np.asarray(_step_embed(params, ids), np.float64)
  total = x.sum((1, 2))
  assert np.all((total > 1.5) & (total < 12))  # Each row's step lies inside the path, away from its ends.
  # Exact integrated gradients: the tanh term's change shared by each slot's part of Σx, plus the linear term.
  change = 5.0 * (np.tanh(STEP_SHARPNESS * (total - 1.0)) - np.tanh(-STEP_SHARPNESS))
  exact = change[:, None] * x.sum(-1) / total[:, None] + 0.1 * x[..., 0]
  for rule in ('gauss_legendre', 'midpoint'):
    fixed = attr_lib.Attributor(STEP_FNS, params, steps=64, rule=rule).integrated_gradients(ids, lengths, targets)
    assert np.max(fixed.error / np.abs(fixed.f_x - fixed.f_baseline)) > 0.05, rule  # They miss the step.
  adaptive = attr_lib.Attributor(STEP_FNS, params, steps=64, rule='adaptive').integrated_gradients(
      ids, lengths, targets)
  delta = np.abs(adaptive.f_x - adaptive.f_baseline)
  assert np.all(delta > 4), delta
  assert np.all(adaptive.error <= 1e-3 * delta), adaptive.error / delta
  np.testing.assert_allclose(adaptive.attributions, exact, atol=2e-3 * delta.max())


def test_the_adaptive_rule_places_its_points_on_the_step():
  params = STEP_FNS.init()
  ids, lengths = padded(step_rows(), WIDTH)
  targets = np.ones(len(ids), np.int32)
  x = _step_embed(params, ids)
  alphas, weights = jax.jit(functools.partial(attr_lib.adaptive_path, STEP_FNS, params, steps=64, output='log_odds'))(
      jnp.zeros_like(x), x, lengths, targets)
  alphas, weights = np.asarray(alphas), np.asarray(weights)
  np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-6)  # The panels tile [0, 1].
  assert np.all((alphas > 0) & (alphas < 1)) and np.all(weights > 0)
  step_at = 1.0 / np.asarray(x).sum((1, 2))
  near = np.abs(alphas - step_at[:, None]) < 1e-2  # 1 % of the path...
  assert np.all(near.sum(1) >= 20), near.sum(1)  # ...holds at least a third of each row's points.


@pytest.mark.parametrize('kind', KINDS)
def test_the_adaptive_rule_is_complete_and_invariant_to_batch_composition_on_tiny_models(kind):
  fns, params = tiny_model(kind)
  attributor = attr_lib.Attributor(fns, params, steps=64, rule='adaptive')
  rows = tiny_rows()
  ids, lengths = padded(rows, WIDTH)
  targets = np.array([0, 1, 2, 1], np.int32)
  result = attributor.integrated_gradients(ids, lengths, targets)
  delta = np.abs(result.f_x - result.f_baseline)
  assert np.all(delta > 1e-3) and np.all(result.error <= 1e-3 * delta), result.error / delta
  # Each row's points are its own: alone, padded wider, it gets the same attributions.
  for i, row in enumerate(rows):
    one_ids, one_lengths = padded([row] + rows[:3], 16)
    alone = attributor.integrated_gradients(one_ids, one_lengths, targets[[i, 0, 1, 2]])
    np.testing.assert_allclose(alone.attributions[0, :WIDTH], result.attributions[i], rtol=1e-4, atol=1e-6)


def test_a_backward_runs_explanations_are_in_the_texts_order_and_its_deletions_in_the_models(tmp_path_factory):
  from tests.test_export import corpus_texts, tiny_artifact  # pylint: disable=g-import-not-at-top
  run, _, data = tiny_artifact(tmp_path_factory, 'lstm_backward')
  texts = corpus_texts(data)[:12]
  attributor = attr_lib.Attributor(run.fns, run.params)
  methods = ['gradient_x_input', 'occlusion']
  explained = explanations.explain_texts(run, texts, attributor=attributor, methods=methods)
  rows = run.encode(texts)  # As the model reads them: last token first.
  direct = explanations.explain_rows(attributor, rows, widths=explanations.widths_of(run), methods=methods)
  data_config = run.config['data']
  for i, e in enumerate(explained):
    forward = run.tokenizer.encode([texts[i]], data_config['max_len'], data_config['keep'])[0]
    assert len(forward) > 1 and e.tokens == run.tokenizer.tokens(forward)
    np.testing.assert_array_equal(e.token_ids, forward)
    for m in methods:
      np.testing.assert_allclose(e.attributions[m], direct[m][i][::-1], atol=1e-6)
  table = explanations.faithfulness_table(run, explained, attributor=attributor)
  expected = faithfulness.evaluate(attributor.probabilities, rows, list(direct['targets']),
                                   {m: [direct[m][i] for i in range(len(rows))] for m in methods},
                                   widths=explanations.widths_of(run))
  assert table == expected
