"""Bad inputs through the real entry point, as a user meets them.

Each case runs `python -m experiments.train` on one mistake and expects one line
`error: ...` that says what and where (and what to do), exit status 2, no traceback,
and every file the workdir held before (a previous run's checkpoints, tokenizer,
config, metrics) unchanged. tests/test_sources_*.py check the data messages in detail;
here the point is what the user sees end to end.

Not covered: a mismatched `init_from` (finetuning does not exist yet).

Speed: the cases run through tests/entry_points.py, which imports the libraries once and
forks a child per case that runs experiments/train.py as __main__ with the case's argv:
the same flag parsing, config loading and error handling as the real command.
"""
import dataclasses
import gzip
import io
import os
import shutil
import tarfile

import pytest

from bigjax import training
from test_reliability import config_args
from tests.entry_points import run_cases, snapshot
from test_train import tiny_config, write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Env:
  """What a case may change: its own copy of a good corpus and of a previous run's workdir."""
  data: str
  workdir: str
  tmp: str
  args: list  # The previous run's flags minus --config.data.path and --workdir.

  def argv(self, *extra, data=None, workdir=None):
    return (self.args + [f'--config.data.path={self.data if data is None else data}',
                         f'--workdir={self.workdir if workdir is None else workdir}'] + list(extra))

  def write(self, name, content, folder=None):
    path = os.path.join(folder or self.data, name)
    with open(path, 'wb' if isinstance(content, bytes) else 'w') as f:
      f.write(content)
    return path

  def folder(self, name):
    path = os.path.join(self.tmp, name)
    os.makedirs(path, exist_ok=True)
    return path


CASES = {}


def case(*expected, rc=2, name=None):
  """Registers fn(env) -> argv; `expected` are substrings of the error line.

  `name` (default: the function's) is for a case named test_*, which pytest would collect as a test.
  """
  def register(fn):
    CASES[name or fn.__name__] = (fn, expected, rc)
    return fn
  return register


# --- Data files -----------------------------------------------------------------------

@case('optim.warmup_steps=5 and optim.warmup_fraction=0.1 are both set', 'set one, the other to 0')
def two_warmups(env):
  return env.argv('--config.optim.warmup_steps=5', '--config.optim.warmup_fraction=0.1')


@case('train.txt:3:', 'byte ff', 'not valid utf-8', 'data.encoding')
def undecodable_bytes(env):
  env.write('train.txt', b'1 good movie\n0 bad movie\n1 caf\xff great\n' + open(f'{env.data}/train.txt', 'rb').read())
  return env.argv()


@case('train.txt:2:', "label 'positive' is not an integer", '"LABEL text"')
def non_integer_label(env):
  env.write('train.txt', '1 good movie\npositive great film\n' + open(f'{env.data}/train.txt').read())
  return env.argv()


@case('train.txt:1:', 'label 1 has no text after it', '--config.data.on_bad_lines=skip')
def missing_text(env):
  env.write('train.txt', '1\n' + open(f'{env.data}/train.txt').read())
  return env.argv()


@case('dev.txt:1:', 'label 7 is out of range [0, 2)', 'data.num_classes')
def label_out_of_range(env):
  env.write('dev.txt', '7 good movie\n' + open(f'{env.data}/dev.txt').read())
  return env.argv('--config.data.num_classes=2')


@case('dev.txt:1:', 'label 7 does not occur in train', 'train.txt', 'labels are 0, 1',
      '--config.data.num_classes=8')
def dev_int_label_not_in_train(env):
  env.write('dev.txt', '7 good movie\n' + open(f'{env.data}/dev.txt').read())
  return env.argv()


@case('test.txt:2:', 'label 2 does not occur in train', 'train.txt', '--config.data.num_classes=3',
      name='test_label_not_in_train')
def label_not_in_train_in_the_test_split(env):
  env.write('test.txt', '0 fine\n2 good movie\n' + open(f'{env.data}/test.txt').read())
  return env.argv()


@case('train.txt:3:', 'label 3 makes 4 classes', 'labels 0, 1, 3', '--config.data.num_classes=4')
def train_class_missing(env):
  env.write('train.txt', '1 good\n0 bad\n3 good movie\n' + open(f'{env.data}/train.txt').read())
  return env.argv()


@case('train.txt:2:', 'label 1000000 makes 1000001 classes', 'implausibly far above')
def implausible_label(env):
  env.write('train.txt', '1 good\n1000000 good movie\n' + open(f'{env.data}/train.txt').read())
  return env.argv()


@case('train.txt:2:', 'label 99999999999999999999999 (23 digits) is not a plausible class id')
def label_overflowing_int64(env):
  env.write('train.txt', '1 good\n99999999999999999999999 good movie\n' + open(f'{env.data}/train.txt').read())
  return env.argv()


@case('train.txt:1:', 'label -1 is out of range')
def negative_label(env):
  env.write('train.txt', '-1 good movie\n' + open(f'{env.data}/train.txt').read())
  return env.argv()


@case('only 1 class', 'at least 2')
def one_class(env):
  for name in ('train.txt', 'dev.txt', 'test.txt'):
    env.write(name, ''.join(f'0 movie number {i}\n' for i in range(30)))
  return env.argv()


@case('dev.txt is an empty file')
def empty_file(env):
  env.write('dev.txt', '')
  return env.argv()


@case('test.txt: no examples after parsing')
def empty_split(env):
  env.write('test.txt', '\n\n  \n')
  return env.argv()


# A 1 MB line is ordinary input and trains (tests/test_sources_local.py); the limit is a memory guard.
@case('train.txt:2: line is', 'longer than data.max_line_mb=1 MiB', '--config.data.max_line_mb=2')
def line_over_the_limit(env):
  env.write('train.txt', '1 good\n0 ' + 'x' * 1_100_000 + '\n' + open(f'{env.data}/train.txt').read())
  return env.argv('--config.data.max_line_mb=1')


def imdb_archive(path, reviews=40):
  with tarfile.open(path, 'w:gz') as tar:
    for i in range(reviews):
      data = (f'review {i} ' * 200).encode()
      info = tarfile.TarInfo(f'aclImdb/train/{("neg", "pos")[i % 2]}/{i}_7.txt')
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


@case('aclImdb_v1.tar.gz: archive is truncated or corrupt', 'download aclImdb_v1.tar.gz again')
def truncated_archive(env):
  path = os.path.join(env.folder('imdb'), 'aclImdb_v1.tar.gz')
  imdb_archive(path)
  os.truncate(path, os.path.getsize(path) // 2)
  return env.argv(data=path)


@case('aclImdb_v1.tar.gz is not a gzip file', 'download aclImdb_v1.tar.gz again')
def not_gzip_archive(env):
  path = env.write('aclImdb_v1.tar.gz', '<html>404 Not Found</html>\n', folder=env.folder('imdb'))
  return env.argv(data=path)


@case('gzip_but_not_tar.tar.gz: archive is truncated or corrupt')
def gzip_but_not_tar(env):
  path = env.write('gzip_but_not_tar.tar.gz', gzip.compress(b'just text, no tar\n' * 100), folder=env.folder('gz'))
  return env.argv(data=path)


@case("train.tsv: no column 'text'", "columns found: 'sentence', 'label'", '--config.data.text_column=sentence')
def tsv_wrong_columns(env):
  folder = env.folder('tsv')
  env.write('train.tsv', 'sentence\tlabel\ngood film\t1\nbad film\t0\n', folder=folder)
  return env.argv(data=folder)


@case('train.csv:3: row has 3 fields but the header has 2', 'delimiter')
def csv_wrong_field_count(env):
  folder = env.folder('csv')
  env.write('train.csv', 'text,label\ngood film,1\nbad, dull film,0\n', folder=folder)
  return env.argv(data=folder)


@case('train.jsonl:2: bad JSON', 'one object like')
def jsonl_bad_json(env):
  folder = env.folder('jsonl')
  env.write('train.jsonl', '{"text": "good", "label": 1}\n{"text": "bad", "label": 0\n', folder=folder)
  return env.argv(data=folder)


@case("train.jsonl:1: no key 'label'", 'data.label_column')
def jsonl_missing_label(env):
  folder = env.folder('jsonl')
  env.write('train.jsonl', '{"text": "good", "stars": 1}\n', folder=folder)
  return env.argv(data=folder)


@case('train.jsonl:1: label [1] must be an integer or a string')
def jsonl_list_label(env):
  folder = env.folder('jsonl')
  env.write('train.jsonl', '{"text": "good", "label": [1]}\n', folder=folder)
  return env.argv(data=folder)


@case("dev.tsv:2: label 'neutral' does not occur in train", 'same label names')
def dev_label_not_in_train(env):
  folder = env.folder('tsv')
  env.write('train.tsv', 'text\tlabel\n' + 'good\tpos\nbad\tneg\n' * 20, folder=folder)
  env.write('dev.tsv', 'text\tlabel\nso so\tneutral\n', folder=folder)
  return env.argv(data=folder)


@case('Unknown data format in folder', 'data.xml', 'supported:')
def unknown_format(env):
  folder = env.folder('xml')
  env.write('data.xml', '<reviews/>', folder=folder)
  return env.argv(data=folder)


@case("data.path '/nonexistent/corpus' does not exist")
def missing_data_path(env):
  return env.argv(data='/nonexistent/corpus')


@case('No data given', 'data.path', 'data.name')
def no_data_given(env):
  return env.argv(data='')


@case("Unknown tensorflow-datasets name 'no_such_dataset_xyz'", 'data.path to local files')
def unknown_tfds_name(env):
  return env.argv('--config.data.name=no_such_dataset_xyz', data='')


@case("Unknown data.encoding 'klingon'", 'latin-1')
def unknown_encoding(env):
  return env.argv('--config.data.encoding=klingon')


# --- Config and flags -------------------------------------------------------------------

# One bad --config override each: case name -> (override, substrings of the error line).
BAD_OVERRIDES = {
    'unknown_config_key': ('--config.train.bogus=1', "--config.train.bogus: train has no key 'bogus'",
                           'keys there:', 'batch_size'),
    'misspelled_config_section': ('--config.trian.steps=3', "--config.trian.steps: the config has no key 'trian'",
                                  'did you mean train?'),
    'bad_override_type': ('--config.train.steps=abc', 'flag --config.train.steps=abc', 'invalid literal for int()'),
    'bad_override_value': ('--config.train.log_every_steps=0', 'train.log_every_steps=0 must be >= 1'),
    'zero_learning_rate': ('--config.optim.learning_rate=0', 'optim.learning_rate=0.0 must be > 0.0'),
    'dropout_of_one': ('--config.model.dropout=1.0', 'model.dropout=1.0 must be in [0.0, 1.0)'),
    'one_bucket_growth': ('--config.data.bucket_growth=1.0', 'data.bucket_growth=1.0 must be > 1.0'),
    'bad_param_groups': ('--config.optim.param_groups=head', "optim.param_groups='head'", 'REGEX=MULTIPLIER'),
    'not_a_run_to_start_from': ('--config.init.checkpoint=/nonexistent/run', '/nonexistent/run is not a bigjax run'),
    'unknown_optimizer': ('--config.optim.name=adamx', "optim: unknown optimizer 'adamx'", 'known: adam, adamw, sgd'),
    'unknown_nan_policy': ('--config.train.nan_policy=maybe', "train.nan_policy='maybe' is unknown", "'stop', 'skip'"),
    'unknown_truncation': ('--config.data.keep=middle', "data.keep='middle' is unknown", "'first', 'last'"),
    'unknown_on_bad_lines': ('--config.data.on_bad_lines=warn', "data.on_bad_lines='warn' is unknown",
                             "'error', 'skip'"),
    'negative_bigram_buckets': ('--config.model.mlp.bigram_buckets=-1', 'model.mlp.bigram_buckets=-1 must be >= 0'),
    'unknown_model': ('--config.model.name=gpt', "model.name='gpt' is unknown"),
    'unknown_dtype': ('--config.model.lstm.dtype=float16', "model.lstm.dtype='float16' is unknown", "'float32', 'bfloat16'"),
    'full_sparsity': ('--config.prune.target_sparsity=1.0', 'prune.target_sparsity=1.0 must be in [0.0, 1.0)'),
    'unknown_prune_scope': ('--config.prune.scope=row', "prune.scope='row' is unknown", "'global', 'layer'"),
    'bad_prune_pattern': ('--config.prune.include=kernel(', "prune.include: 'kernel(' is not a regular expression"),
    'not_a_teacher_run': ('--config.distill.teacher=/nonexistent/teacher', '/nonexistent/teacher is not a bigjax run'),
    'zero_temperature': ('--config.distill.temperature=0', 'distill.temperature=0.0 must be > 0.0'),
}
for _name, (_override, *_expected) in BAD_OVERRIDES.items():
  CASES[_name] = (lambda env, override=_override: env.argv(override), tuple(_expected), 2)


@case('cannot load --config', 'No such file or directory', '/nonexistent/config.py')
def missing_config_file(env):
  return ['--config=/nonexistent/config.py'] + [arg for arg in env.argv() if not arg.startswith('--config=')]


@case('broken.py:2: ', 'a syntax error in the --config file')
def config_syntax_error(env):
  path = env.write('broken.py', 'def get_config():\n  return {\n', folder=env.folder('configs'))
  return [f'--config={path}', f'--workdir={env.workdir}']


@case("unexpected arguments ['train']", '--name=value')
def unexpected_positional_argument(env):
  return env.argv('train')


@case("Unknown command line flag 'work_dir'", '--helpfull')
def unknown_flag(env):
  return env.argv('--work_dir=/tmp/x')


# --- Workdir ----------------------------------------------------------------------------

@case('Flag --workdir must have a value')
def missing_workdir(env):
  return [arg for arg in env.argv() if not arg.startswith('--workdir=')]


@case('cannot be written', 'Not a directory', 'choose a writable folder')
def unwritable_workdir(env):
  blocker = env.write('a_file', 'not a folder', folder=env.tmp)
  return env.argv(workdir=os.path.join(blocker, 'run'))


@case('is a file', 'choose a folder')
def workdir_is_a_file(env):
  return env.argv(workdir=env.write('a_file', 'not a folder', folder=env.tmp))


@case('written by an incompatible run', 'model.mlp.hidden_dim: saved 16, this run 8', 'use another --workdir')
def workdir_of_an_incompatible_run(env):
  return env.argv('--config.model.mlp.hidden_dim=8')


@case('written by an incompatible run', 'data: saved')
def workdir_of_a_run_on_other_data(env):
  env.write('train.txt', open(f'{env.data}/train.txt').read() + '1 one more good film\n')
  return env.argv()


@case('tokenizer.json: cannot load the tokenizer', 'delete it to retrain')
def corrupt_tokenizer(env):
  env.write('tokenizer.json', '{"version": "1.0", "trunc', folder=env.workdir)
  return env.argv()


@case('none of the checkpoints [5] can be restored', 'see the warnings above')
def every_checkpoint_damaged(env):
  shutil.rmtree(os.path.join(env.workdir, 'checkpoints', '5', 'state'))
  return env.argv()


@case('Traceback', "data.path '/nonexistent/corpus' does not exist")
def verbose_shows_the_traceback(env):
  return env.argv('--verbose', data='/nonexistent/corpus')


# ---------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  """Prepares every case, runs them all in one helper process, returns {name: outcome}."""
  tmp = tmp_path_factory.mktemp('bad_inputs')
  corpus = write_corpus(str(tmp / 'corpus'))
  previous = str(tmp / 'previous_run')
  config = tiny_config(corpus)
  training.run_training(config, previous, stop_after_steps=5)  # Checkpoint 5, tokenizer, config, metrics.
  base_args = [a for a in config_args(config) if not a.startswith('--config.data.path=')]
  envs, argvs, before = {}, {}, {}
  for name, (fn, _, _) in CASES.items():
    folder = tmp / name
    env = Env(data=str(folder / 'data'), workdir=str(folder / 'workdir'), tmp=str(folder), args=list(base_args))
    shutil.copytree(corpus, env.data)
    shutil.copytree(previous, env.workdir)
    argvs[name] = fn(env)
    before[name] = snapshot(env.workdir)
    envs[name] = env
  results = run_cases({name: ('experiments.train', argv) for name, argv in argvs.items()}, str(tmp))
  for name, env in envs.items():
    after = snapshot(env.workdir)
    results[name]['lost'] = sorted(p for p, digest in before[name].items() if after.get(p) != digest)
  return results


def test_there_are_at_least_25_cases():
  assert len(CASES) >= 25


@pytest.mark.parametrize('name', sorted(CASES))
def test_bad_input(outcomes, name):
  _, expected, rc = CASES[name]
  outcome = outcomes[name]
  output = outcome['output']
  errors = [line for line in output.splitlines() if line.startswith('error: ')]
  if name == 'verbose_shows_the_traceback':
    assert outcome['rc'] != 0 and all(e in output for e in expected), output[-3000:]
    return
  assert outcome['rc'] == rc, output[-3000:]
  assert len(errors) == 1, output[-3000:]
  assert 'Traceback' not in output, output[-3000:]
  for e in expected:
    assert e in errors[0], (e, errors[0])
  assert not outcome['lost'], f'changed or deleted in the workdir: {outcome["lost"]}'
