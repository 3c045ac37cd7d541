"""A command never writes over a run: its output folder is refused before anything is written
when it is the command's own input, lies inside it, holds another run, or holds other files.

Each case runs the real entry point (tests/entry_points.py) on its own copies of a trained
run, and expects exit status 2, one `error:` line, no traceback, and every copied folder
byte-for-byte as it was (no file changed, added or removed, no folder created inside).
"""
import json
import os
import shutil

import pytest

from bigjax import training
from bigjax import workdirs
from bigjax.errors import ConfigError, DataError
from tests.entry_points import run_cases, snapshot
from tests.test_reliability import config_args
from tests.test_train import tiny_config, write_corpus

TINY = {'train.steps': 4, 'checkpoint.every_steps': 2, 'train.log_every_steps': 2}
STUDENT = 'experiments/configs/mlp_sst2.py:tiny'
LM = 'experiments/configs/lm_sst2.py:tiny'
CASES = {}


def case(module, *expected):
  """Registers fn(env) -> argv of `module`; `expected` are substrings of the error line."""
  def register(fn):
    CASES[fn.__name__] = (module, fn, expected)
    return fn
  return register


class Env:
  """A case's own copies: `source` (a trained run), `other` (another run), `data`, and `tmp`."""

  def __init__(self, folder, run, data, args):
    self.tmp = folder
    self.source, self.other = os.path.join(folder, 'source'), os.path.join(folder, 'other')
    shutil.copytree(run, self.source)
    shutil.copytree(run, self.other)
    self.data = data
    self.args = args  # The trained run's --config flags.

  def folder_with(self, name, content):
    folder = os.path.join(self.tmp, 'user_folder')
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), 'w') as f:
      f.write(content)
    return folder


@case('experiments.compress', 'is the same folder as --from=', 'choose a new folder')
def compress_quantize_into_its_source(env):
  return [f'--from={env.source}', '--method=quantize', f'--workdir={env.source}']


@case('experiments.compress', 'is the same folder as --from=')
def compress_prune_into_its_source(env):
  return [f'--from={env.source}', '--method=prune', f'--workdir={env.source}']


@case('experiments.compress', 'is the same folder as --from=')
def compress_distill_into_its_source(env):
  return [f'--from={env.source}', '--method=distill', f'--student={STUDENT}', f'--workdir={env.source}']


@case('experiments.compress', 'lies inside --from=')
def compress_inside_its_source(env):
  return [f'--from={env.source}', '--method=quantize', f'--workdir={os.path.join(env.source, "int8")}']


@case('experiments.compress', 'holds --from=')
def compress_into_the_folder_above_its_source(env):
  return [f'--from={env.source}', '--method=quantize', f'--workdir={env.tmp}']


@case('experiments.compress', 'holds the output of experiments.train', 'choose a new or empty folder')
def compress_into_another_run(env):
  return [f'--from={env.source}', '--method=prune', f'--workdir={env.other}']


@case('experiments.compress', 'holds files bigjax did not write (notes.txt)')
def compress_into_a_folder_of_other_files(env):
  return [f'--from={env.source}', '--method=quantize', f'--workdir={env.folder_with("notes.txt", "mine")}']


@case('experiments.train', 'is the same folder as init.checkpoint=')
def train_starting_from_its_own_folder(env):
  return env.args + [f'--config.init.checkpoint={env.source}', f'--workdir={env.source}']


@case('experiments.train', 'holds the output of experiments.compress --method=quantize')
def train_into_a_compressed_run(env):
  with open(os.path.join(env.other, workdirs.ORIGIN_FILE), 'w') as f:
    json.dump({'command': 'experiments.compress --method=quantize', 'inputs': [env.source]}, f)
  return env.args + [f'--workdir={env.other}']


@case('experiments.train', 'holds the output of experiments.train (model mlp);',
      'this is experiments.train (model mlp) from')
def train_into_a_run_started_otherwise(env):
  return env.args + [f'--config.init.checkpoint={env.source}', f'--workdir={env.other}']


@case('experiments.pretrain', 'is the same folder as init.checkpoint=')
def pretrain_starting_from_its_own_folder(env):
  return [f'--config={LM}', f'--config.data.path={env.data}', f'--config.init.checkpoint={env.source}',
          f'--workdir={env.source}']


@case('experiments.pretrain', 'holds the output of experiments.train (model mlp)',
      'this is experiments.train (model lstm_lm)')
def pretrain_into_a_classifier_run(env):
  return [f'--config={LM}', f'--config.data.path={env.data}', f'--workdir={env.other}']


@case('experiments.pretrain_embeddings', 'holds the output of experiments.train')
def pretrain_embeddings_into_a_run(env):
  return env.args + [f'--workdir={env.other}']


@case('experiments.export', '--out=', 'is the same folder as --workdir=')
def export_into_its_run(env):
  return [f'--workdir={env.source}', f'--out={env.source}']


@case('experiments.export', 'lies inside --workdir=')
def export_inside_its_run(env):
  return [f'--workdir={env.source}', f'--out={os.path.join(env.source, "artifact")}']


@case('experiments.learning_curve', 'is the same folder as --config.init.checkpoint (in a --start)=')
def learning_curve_into_its_start(env):
  return [f'--workdir={env.source}', f'--start=lm={STUDENT} --config.init.checkpoint={env.source}']


@case('experiments.learning_curve', 'holds the output of experiments.train')
def learning_curve_into_a_run(env):
  return [f'--workdir={env.other}', f'--start=scratch={STUDENT}', '--budgets=10', '--seeds=1']


@case('experiments.evaluate', '--json_out=', 'would replace a file of the run')
def evaluate_report_over_a_run_file(env):
  return [f'--workdir={env.source}', f'--data={os.path.join(env.data, "test.txt")}',
          f'--json_out={os.path.join(env.source, "config.json")}']


@case('experiments.predict', '--output=', 'is --input')
def predict_output_over_its_input(env):
  texts = env.folder_with('texts.txt', 'a good film\n')
  path = os.path.join(texts, 'texts.txt')
  return [f'--model={env.source}', f'--input={path}', f'--output={path}']


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  """Prepares every case, runs them all in one helper process; {name: outcome, 'lost': [...]}."""
  tmp = tmp_path_factory.mktemp('workdirs')
  data = write_corpus(str(tmp / 'corpus'))
  config = tiny_config(data, **TINY)
  run = str(tmp / 'run')
  training.run_training(config, run)
  args = config_args(config)
  cases, envs, before = {}, {}, {}
  for name, (module, fn, _) in CASES.items():
    env = Env(str(tmp / name), run, data, args)
    cases[name] = (module, fn(env))
    envs[name] = env
    before[name] = snapshot(env.tmp)
  results = run_cases(cases, str(tmp))
  for name, env in envs.items():
    after = snapshot(env.tmp)
    results[name]['lost'] = sorted(p for p in set(before[name]) | set(after) if before[name].get(p) != after.get(p))
  return results


@pytest.mark.parametrize('name', sorted(CASES))
def test_an_output_over_a_run_is_refused_before_anything_is_written(outcomes, name):
  _, _, expected = CASES[name]
  outcome = outcomes[name]
  output = outcome['output']
  errors = [line for line in output.splitlines() if line.startswith('error: ')]
  assert outcome['rc'] == 2, output[-3000:]
  assert len(errors) == 1 and 'Traceback' not in output, output[-3000:]
  for e in expected:
    assert e in errors[0], (e, errors[0])
  assert not outcome['lost'], f'changed, added or deleted: {outcome["lost"]}'


def test_a_run_resumes_its_own_folder_and_older_runs_are_recognised(tmp_path):
  data = write_corpus(str(tmp_path / 'corpus'))
  config = tiny_config(data, **TINY)
  workdir = str(tmp_path / 'run')
  assert training.run_training(config, workdir, stop_after_steps=2)['step'] == 2
  origin = workdirs.read_origin(workdir)
  assert origin == workdirs.Origin('experiments.train (model mlp)')
  # A run from before origin.json existed: its config.json says what made it.
  os.remove(os.path.join(workdir, workdirs.ORIGIN_FILE))
  assert workdirs.read_origin(workdir) == origin
  assert training.run_training(config, workdir)['step'] == TINY['train.steps']
  # The same folder for another command, or the same command from another start: refused.
  with pytest.raises(ConfigError, match=r'holds the output of experiments.train \(model mlp\)'):
    workdirs.claim(workdir, 'experiments.compress --method=quantize', {'--from': str(tmp_path / 'elsewhere')})
  with pytest.raises(ConfigError, match=r'this is experiments.train \(model mlp\) from'):
    workdirs.claim(workdir, 'experiments.train (model mlp)', {'init.checkpoint': str(tmp_path / 'elsewhere')})


def test_claim_takes_a_new_or_empty_folder_and_ignores_other_processes_probes(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / '.write_test_abc').write_text('ok')  # Another process of the same job, probing.
  assert workdirs.claim(str(empty), 'experiments.train') == str(empty)
  assert json.loads((empty / workdirs.ORIGIN_FILE).read_text()) == {'command': 'experiments.train', 'inputs': []}
  assert workdirs.claim(str(tmp_path / 'a' / 'b'), 'experiments.train', record=False)
  assert not (tmp_path / 'a' / 'b' / workdirs.ORIGIN_FILE).exists()
  (tmp_path / 'file').write_text('x')
  with pytest.raises(ConfigError, match='is a file'):
    workdirs.claim(str(tmp_path / 'file'), 'experiments.train')
  damaged = tmp_path / 'damaged'
  damaged.mkdir()
  (damaged / workdirs.ORIGIN_FILE).write_text('{"comm')
  with pytest.raises(DataError, match='origin.json: not valid JSON'):
    workdirs.claim(str(damaged), 'experiments.train')
