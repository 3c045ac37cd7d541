"""The tools around training follow a run through its metrics.jsonl, never its log lines."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import peers
from bigjax import learning_curves as curves
from tests.entry_points import run_module
from tests.test_train import write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One shape (one compile), 40 steps, a checkpoint every 5, a 'train' record every step.
TINY = ['data.vocab_size=120', 'model.embed_dim=16', 'model.mlp.hidden_dim=16', 'train.steps=40',
        'train.batch_size=16', 'checkpoint.every_steps=5', 'train.log_every_steps=1', 'data.max_len=16',
        'data.smallest_bucket=16']


def record(step, kind, time, **fields):
  return json.dumps({'step': step, 'kind': kind, **fields, 'time': time}) + '\n'


def test_metrics_follower_reads_complete_lines_only_and_follows_a_rewrite(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  follower = peers.MetricsFollower(str(path))
  assert follower.poll() == []  # No file yet: the run has not started.
  first = record(0, 'start', 100.0, start_step=0, total_steps=20) + record(5, 'train', 101.0, loss=0.5)
  partial = record(5, 'dev', 101.5, accuracy=0.75)
  path.write_text(first + partial[:20])  # As a poll sees a line being written.
  assert [(r['kind'], r['step']) for r in follower.poll()] == [('start', 0), ('train', 5)]
  assert follower.poll() == []
  with open(path, 'a', encoding='utf-8') as f:
    f.write(partial[20:])
  assert [(r['kind'], r['step'], r['accuracy']) for r in follower.poll()] == [('dev', 5, 0.75)]
  # A resume rewrites the file (os.replace) with what it keeps, then appends its 'start'.
  resumed = first + record(5, 'start', 200.0, start_step=5, total_steps=20)
  (tmp_path / 'new').write_text(resumed)
  os.replace(tmp_path / 'new', path)
  assert [(r['kind'], r['step']) for r in follower.poll()] == [('start', 0), ('train', 5), ('start', 5)]
  # `since` keeps an attempt's own records: those written after it was launched.
  this_attempt = peers.MetricsFollower(str(path), since=150.0)
  assert [(r['kind'], r['start_step']) for r in this_attempt.poll()] == [('start', 5)]


def test_bigjax_curve_pairs_each_test_curve_record_with_its_dev_record(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  path = workdir / 'metrics.jsonl'
  lines = [record(0, 'start', 10.0, start_step=0, total_steps=30),
           record(15, 'train', 11.0, loss=0.6, accuracy=0.6),
           record(15, 'dev', 11.5, accuracy=0.7, macro_f1=0.69, loss=0.6),
           record(15, 'test_curve', 11.75, accuracy=0.65, macro_f1=0.64, loss=0.62),
           record(30, 'train', 12.0, loss=0.4, accuracy=0.8),
           record(30, 'dev', 12.5, accuracy=0.8, macro_f1=0.79, loss=0.45)]
  test_30 = record(30, 'test_curve', 12.75, accuracy=0.85, macro_f1=0.84, loss=0.4)
  path.write_text(''.join(lines) + test_30[:-10])  # The last line is still being written.
  curve = peers.BigjaxCurve(str(workdir))
  assert curve.poll() == [{'step': 15, 'dev_acc': 0.7, 'test_acc': 0.65, 'time': 11.75}]
  with open(path, 'a', encoding='utf-8') as f:
    f.write(test_30[-10:])
  assert curve.poll() == [{'step': 30, 'dev_acc': 0.8, 'test_acc': 0.85, 'time': 12.75}]
  assert curve.poll() == []


# Slow tier: a benchmark tool end to end; SIGKILL resumes are checked in test_reliability and test_engine.
@pytest.mark.slow
def test_kill_trial_kills_where_it_means_to_and_resumes_exactly(tmp_path):
  """The real tool on a tiny run: each SIGKILL lands after its target step is recorded."""
  data = write_corpus(tmp_path / 'data')
  report_path = tmp_path / 'report.json'
  command = [sys.executable, '-m', 'benchmarks.kill_trial', '--config=experiments/configs/base.py',
             *(f'--set={kv}' for kv in [f'data.path={data}', *TINY]), '--kills=2', '--seed=0',
             f'--workdir={tmp_path / "trial"}', f'--json_out={report_path}']
  # Four processes start: a persistent compilation cache, filled by the uninterrupted
  # reference run, spares the three others their compiles (half of their time). A cache
  # entry a SIGKILL cut short would only be recompiled (JAX warns and compiles again).
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  report = json.loads(report_path.read_text())
  assert len(report['kills']) == 2, report
  for kill in report['kills']:
    assert kill['target_step'] <= kill['last_logged_step'] <= 40, report
    # A kill lands after its target, so on a fast machine the tiny run can reach its last
    # checkpoint first; the next attempt then resumes from step 40 with only its final
    # evaluation left, and the tool aims at that.
    assert kill['resumed_from'] < kill['target_step'] or kill['resumed_from'] == kill['target_step'] == 40, report
  assert report['same'] is True, report
  assert all(got == expected for got, expected in report['checks'].values()), report


@pytest.mark.slow
def test_time_to_accuracy_follows_bigjax_through_its_metrics(tmp_path):
  """The bigjax side of a race: its test curve from metrics.jsonl, stopped at the target."""
  data = write_corpus(tmp_path / 'data')
  workdir = tmp_path / 'race'
  sizes = ['data.vocab_size=120', 'model.embed_dim=16', 'model.lstm.hidden_dim=16', 'train.batch_size=16',
           'train.epochs=3', 'data.max_len=16', 'data.smallest_bucket=16']
  command = [sys.executable, '-m', 'benchmarks.time_to_accuracy', '--config=experiments/configs/lstm_imdb.py',
             f'--config.data.path={data}', *(f'--config.{kv}' for kv in sizes), '--sides=bigjax', '--target=0',
             f'--workdir={workdir}']
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  side = json.loads((workdir / 'race.json').read_text())['sides']['bigjax']
  # 240 examples in batches of 16: a checkpoint (dev, then test) every 15 steps. The first
  # point reaches --target=0, so the race stops the run (SIGTERM: it saves and exits 0).
  point = side['curve'][0]
  assert point['step'] == 15 and 0 <= point['test_acc'] <= 1 and 0 <= point['dev_acc'] <= 1, side
  assert side['exit_status'] == 0 and 0 < side['seconds_to_target'] == point['elapsed_s'] <= side['wall_s'], side
  records = [json.loads(line) for line in (workdir / 'bigjax' / 'metrics.jsonl').read_text().splitlines()]
  curve = [(r['step'], r['accuracy']) for r in records if r['kind'] == 'test_curve']
  assert [(p['step'], p['test_acc']) for p in side['curve']] == curve
  # Stopped before its 45 steps: no final test, no results.json.
  assert not any(r['kind'] == 'test' for r in records) and not (workdir / 'bigjax' / 'results.json').exists()


def test_learning_curve_runs_each_point_once_and_tabulates_them(tmp_path):
  data = write_corpus(tmp_path / 'data', sizes=(120, 40, 40))
  tiny = ' '.join(f'--config.{o}' for o in TINY if not o.startswith('train.steps')) + ' --config.train.steps=8'
  args = [f'--workdir={tmp_path / "curve"}', '--budgets=30,0',
          '--seeds=2', '--full_seeds=1', f'--extra=--config.data.path={data} {tiny}',
          '--start=narrow=experiments/configs/mlp_sst2.py',
          '--start=wide=experiments/configs/mlp_sst2.py --config.model.embed_dim=32']
  first = run_module('experiments.learning_curve', args, timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  out = json.loads((tmp_path / 'curve' / 'learning_curve.json').read_text())
  runs = out['runs']
  assert sorted((r['start'], r['budget'], r['seed']) for r in runs) == sorted(
      [(s, 30, 0) for s in ('narrow', 'wide')] + [(s, 30, 1) for s in ('narrow', 'wide')] +
      [(s, 0, 0) for s in ('narrow', 'wide')])
  assert {r['train_examples'] for r in runs if r['budget'] == 30} == {30}
  assert {r['train_examples'] for r in runs if r['budget'] == 0} == {120}
  for r in runs:  # Each record is its run's own results.json and config.
    results = json.loads((tmp_path / 'curve' / r['start'] / f"n{r['budget'] or 'all'}_s{r['seed']}" /
                          'results.json').read_text())
    assert r['test_accuracy'] == results['test']['accuracy']
    cfg = json.loads((tmp_path / 'curve' / r['start'] / f"n{r['budget'] or 'all'}_s{r['seed']}" /
                      'config.json').read_text())['config']
    assert cfg['data']['train_limit'] == r['budget'] and cfg['seed'] == r['seed']
    assert cfg['model']['embed_dim'] == (32 if r['start'] == 'wide' else 16)
  row = next(s for s in out['summary'] if s['start'] == 'wide' and s['budget'] == 30)
  pair = [r['test_accuracy'] for r in runs if r['start'] == 'wide' and r['budget'] == 30]
  assert row['runs'] == 2 and row['test_mean'] == pytest.approx(sum(pair) / 2)
  assert row['test_sd'] == pytest.approx(abs(pair[0] - pair[1]) / 2 ** 0.5)
  table = (tmp_path / 'curve' / 'learning_curve.md').read_text()
  assert '| labels | narrow | wide |' in table and '| 120 (all) |' in table
  assert (tmp_path / 'curve' / 'learning_curve.png').read_bytes()[:4] == b'\x89PNG'
  # Again: every point is read, none retrained, and the curve is the same.
  again = run_module('experiments.learning_curve', args, timeout=300)
  assert again.returncode == 0 and again.stdout == first.stdout
  assert 'training' not in again.stderr and again.stderr.count('done before, read') == 6
  # Bad starts get one clear line.
  for start, message in (('nameonly', 'expected NAME=CONFIG_FILE'), ('x=no/such.py', 'no config file'),
                         ('x=experiments/configs/mlp_sst2.py --workdir=y', 'is not a --config.KEY=VALUE')):
    with pytest.raises(Exception, match=message):
      curves.Start.parse(start)
