"""Every command of the README's ```bash blocks runs, in order, as a user would, at toy sizes.

The commands run in a temporary checkout (links to bigjax/ and experiments/, ../shared/data
and ../shared/models linked to the real corpora and models), so runs/, artifacts/ and the other outputs land there. Each is
the README's text with two changes: `--config=experiments/configs/X.py` becomes
`...X.py:tiny` (every config has that variant: the same recipe at toy sizes), and the server's
port 8000 becomes a free one (another test session may hold 8000). `python -m experiments.X`
(`.venv/bin/python` is this interpreter) and shell lines run in one helper process
(tests/entry_points.py: the libraries imported once, a forked child per command). The server
is its own process, started in the background, asked with the README's curl line and stopped
with SIGTERM; it reads only the artifact, so it and the curl line run after the other
commands (none of which reads what the server writes). SKIPPED says which commands do not run
here and why; the test of each shows it as a pytest skip with that reason.
"""
import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.entry_points import run_cases

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / 'shared' / 'data'
SERVER_WAIT_S = 120
_SETUP = "Command 1's set-up: CI's .ci/run does exactly it (a fresh .venv, then pip install -e \".[test]\")"
SKIPPED = {  # Command -> why it does not run here.
    'python3 -m venv .venv': _SETUP,
    '.venv/bin/pip install -e ".[test]"': _SETUP,
    '.venv/bin/python -m pytest -q': 'Command 2: the test suite, which is running this test',
    '.venv/bin/python -m experiments.pretrain --config=experiments/configs/mlm_imdb.py --workdir=runs/mlm_imdb':
        'even at :tiny it reads the IMDB archive and tokenizes its 72,500 train and unlabelled reviews; '
        'tests/test_masked_lm.py runs this command, :tiny, on a small corpus (the pretrained fixture)',
    ('.venv/bin/python -m experiments.train --config=experiments/configs/transformer_imdb.py '
     '--workdir=runs/transformer_imdb --config.init.checkpoint=runs/mlm_imdb'):
        'finetunes from runs/mlm_imdb, the command above, which does not run here; tests/test_masked_lm.py runs it, '
        ':tiny, from a tiny masked LM (the pretrained fixture)',
    '.venv/bin/python -m experiments.train --config=experiments/configs/minilm_sst2.py --workdir=runs/minilm_sst2':
        'finetunes the 22.7 M-parameter MiniLM (a minute even at :tiny); tests/test_huggingface.py runs this '
        'command, :tiny, on the shared MiniLM (the finetuned fixture)',
    ('.venv/bin/python -m experiments.export --workdir=runs/minilm_sst2 --out=exports/minilm_sst2_hf '
     '--format=huggingface'):
        'exports runs/minilm_sst2, the command above, which does not run here; tests/test_huggingface.py runs it '
        '(the finetuned fixture)',
    ('.venv/bin/python -m experiments.compress --from=runs/mlp_sst2 --method=prune --workdir=runs/mlp_sst2_pruned '
     '--config.prune.target_sparsity=0.8'):
        'five epochs of finetuning (compress takes no tiny config); tests/test_compress.py runs this command '
        'on a tiny run (test_pruning_learns_from_its_source_by_default)',
    ('.venv/bin/python -m experiments.learning_curve --workdir=runs/curve_sst2 --budgets=100,1000,0 '
     '--start="scratch=experiments/configs/mlp_sst2.py" '
     '--start="word2vec=experiments/configs/mlp_sst2.py --config.init.embeddings=runs/w2v_sst2"'):
        'fourteen training runs; tests/test_tools.py runs experiments.learning_curve end to end on tiny runs',
}


@dataclasses.dataclass(frozen=True)
class Command:
  number: int  # 1, 2, ... in README order.
  line: int  # Where its block starts in README.md.
  text: str  # As the README gives it (continuations joined).

  @property
  def words(self) -> list:
    return shlex.split(self.text)

  @property
  def module(self) -> str:
    """X of `[.venv/bin/]python[3] -m X ...`; '' for any other command."""
    words = self.words
    is_python = os.path.basename(words[0]) in ('python', 'python3')
    return words[2] if is_python and len(words) > 2 and words[1] == '-m' else ''

  @property
  def name(self) -> str:
    return f'{self.number:02d}-{self.module or os.path.basename(self.words[0])}'


def readme_commands(text: str) -> list:
  """The commands of the ```bash blocks, in order: comment lines dropped, `\\` continuations
  joined, `a && b` split into its commands."""
  commands, block, start = [], None, 0
  for number, line in enumerate(text.splitlines(), 1):
    if line.startswith('```'):
      if block is None and line.strip() == '```bash':
        block, start = [], number
      elif block is not None:
        joined = re.sub(r'\\\n\s*', '', '\n'.join(block))
        for command_line in joined.splitlines():
          for command in re.split(r'\s+&&\s+', command_line.strip()):
            if command:
              commands.append(Command(len(commands) + 1, start, command))
        block = None
      continue
    if block is not None and not line.lstrip().startswith('#'):
      block.append(line)
  return commands


COMMANDS = readme_commands((ROOT / 'README.md').read_text(encoding='utf-8'))


def tiny(text: str, port: int) -> str:
  """The command at toy sizes, and on `port` instead of 8000."""
  text = re.sub(r'(--config=experiments/configs/\w+\.py)(?=\s|$)', r'\1:tiny', text)
  return re.sub(r'(--port=|127\.0\.0\.1:|localhost:)8000\b', rf'\g<1>{port}', text)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def as_case(text: str):
  """(module, argv[, stdout]) for entry_points.run_cases: `python -m X ...` in the helper,
  anything else as a shell line."""
  words = shlex.split(text)
  if os.path.basename(words[0]) not in ('python', 'python3') or words[1:2] != ['-m']:
    return ('', [text])
  module, argv = words[2], words[3:]
  if '>' in argv:  # `> FILE` (the README's only redirection).
    at = argv.index('>')
    return (module, argv[:at] + argv[at + 2:], argv[at + 1])
  return (module, argv)


def serve_and_ask(serve: Command, curl: Command, checkout: pathlib.Path, port: int, outcomes: dict) -> None:
  """Starts the server in the background, waits for /healthz, runs the curl line, stops it."""
  argv = shlex.split(tiny(serve.text, port))[1:]
  with open(checkout / 'serve.log', 'w+', encoding='utf-8') as log:
    began = time.monotonic()
    server = subprocess.Popen([sys.executable, *argv], cwd=checkout, stdout=log, stderr=subprocess.STDOUT)
    try:
      while time.monotonic() - began < SERVER_WAIT_S and server.poll() is None:
        try:
          with urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=5) as answer:
            if answer.status == 200:
              break
        except (urllib.error.URLError, ConnectionError):
          time.sleep(0.1)
      up = time.monotonic() - began
      asked = time.monotonic()
      outcomes[curl.text] = ask(tiny(curl.text, port), checkout)
      outcomes[curl.text]['seconds'] = time.monotonic() - asked
    finally:
      if server.poll() is None:
        server.send_signal(signal.SIGTERM)
      try:
        rc = server.wait(timeout=60)
      except subprocess.TimeoutExpired:
        server.kill()
        rc = 'no exit 60 s after SIGTERM'
    log.seek(0)
    outcomes[serve.text] = {'rc': rc, 'output': log.read(), 'seconds': time.monotonic() - began,
                            'up_after_s': up}


def ask(curl_line: str, checkout: pathlib.Path) -> dict:
  """The curl line's outcome; with urllib, the same request, where curl is absent."""
  if shutil.which('curl'):
    done = subprocess.run(curl_line, shell=True, cwd=checkout, capture_output=True, text=True, timeout=60,
                          check=False)
    return {'rc': done.returncode, 'output': done.stdout + done.stderr}
  words = shlex.split(curl_line)  # curl -s HOST:PORT/PATH -d BODY: a POST of BODY.
  data = words[words.index('-d') + 1]
  url = next(w for w in words[1:] if not w.startswith('-') and w != data)
  try:
    with urllib.request.urlopen(f'http://{url}', data=data.encode(), timeout=60) as answer:
      return {'rc': 0, 'output': answer.read().decode()}
  except urllib.error.URLError as e:
    return {'rc': 1, 'output': str(e)}


@pytest.fixture(scope='module')
def walked(tmp_path_factory):
  """{command text: {'rc', 'output', 'seconds'}} of every command run, and the checkout."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f'the shared corpora folder {SHARED_DATA} is absent (it sits beside the project root)')
  tmp = tmp_path_factory.mktemp('readme')
  checkout = tmp / 'checkout'
  checkout.mkdir()
  for package in ('bigjax', 'experiments'):
    (checkout / package).symlink_to(ROOT / package)
  (tmp / 'shared').mkdir()
  (tmp / 'shared' / 'data').symlink_to(SHARED_DATA)
  if (SHARED_DATA.parent / 'models').is_dir():  # The public tokenizer of the private run's config.
    (tmp / 'shared' / 'models').symlink_to(SHARED_DATA.parent / 'models')
  port = free_port()
  to_run = [c for c in COMMANDS if c.text not in SKIPPED]
  server = [c for c in to_run if c.module == 'experiments.serve']
  curl = [c for c in to_run if c.words[0] == 'curl']
  assert len(server) == len(curl) == 1, 'the README has one server and one curl line to ask it'
  cases = {c.name: as_case(tiny(c.text, port)) for c in to_run if c not in server + curl}
  results = run_cases(cases, str(tmp), cwd=str(checkout))
  outcomes = {c.text: results[c.name] for c in to_run if c.name in results}
  serve_and_ask(server[0], curl[0], checkout, port, outcomes)
  lines = [f'{c.name}: skipped: {SKIPPED[c.text]}' if c.text in SKIPPED else
           f'{c.name}: exit {outcomes[c.text]["rc"]} in {outcomes[c.text]["seconds"]:.1f} s' for c in COMMANDS]
  print('\nThe README, command by command:\n  ' + '\n  '.join(lines))
  return outcomes, checkout


def test_the_readme_has_the_commands_this_test_knows_to_skip():
  """Exactly the commands of SKIPPED are skipped; everything else runs."""
  skipped = [c.text for c in COMMANDS if c.text in SKIPPED]
  assert skipped == list(SKIPPED), f'skipped {skipped}; the README lost a command SKIPPED names'
  assert len(COMMANDS) > 8 and {c.module for c in COMMANDS} >= {'experiments.train', 'experiments.serve'}


@pytest.mark.parametrize('command', COMMANDS, ids=lambda c: c.name)
def test_readme_command(command, request):
  if command.text in SKIPPED:
    pytest.skip(SKIPPED[command.text])
  outcomes, checkout = request.getfixturevalue('walked')
  outcome = outcomes[command.text]
  assert outcome['rc'] == 0, f'{tiny(command.text, 0)}\n{outcome["output"][-4000:]}'
  case = as_case(command.text)
  if command.module == 'experiments.train':
    workdir = next(w.split('=', 1)[1] for w in command.words if w.startswith('--workdir='))
    assert (checkout / workdir / 'results.json').is_file()
  if len(case) == 3:  # Output redirected to a file: one JSON line per text.
    argv = case[1]
    texts = next(a.split('=', 1)[1] for a in argv if a.startswith('--input='))
    lines = (checkout / case[2]).read_text(encoding='utf-8').splitlines()
    assert len(lines) == len((checkout / texts).read_text(encoding='utf-8').splitlines()) > 0
    assert all('label' in json.loads(line) for line in lines[:5]), lines[:5]
  if command.words[0] == 'curl':
    answer = json.loads(outcome['output'])
    assert len(answer['predictions']) == 1, answer


def test_the_readme_lists_the_shipped_configs():
  """The README's "Shipped:" names are the config files; each file, as shipped and tiny, loads
  and passes check_config in tests/test_engine.py (test_every_shipped_config_loads_and_passes_its_checks)."""
  names = sorted(p.stem for p in (ROOT / 'experiments' / 'configs').glob('*.py') if p.stem not in ('__init__', 'base'))
  readme = (ROOT / 'README.md').read_text(encoding='utf-8')
  shipped = re.search(r'^Shipped: (.*?)\.\s', readme, re.M | re.S).group(1)
  assert sorted(re.findall(r'`(\w+)`', shipped)) == names
