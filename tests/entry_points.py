"""Runs entry points (`python -m experiments.X ARGV`) many times, cheaply, for tests.

A fresh interpreter per case would spend ~5 s importing JAX each. One helper process
imports the libraries once (no JAX backend, no threads yet), then forks a child per case
that runs the module as __main__ with the case's argv: the same flag parsing, config
loading and error handling as the real command. The helper lives as long as the test
session (another is started where os.environ has changed), so a run_cases call pays for its
forks alone, not for another import of the libraries.

A case is (module, argv) or (module, argv, stdout): its standard output then goes to the
file `stdout` (as `> stdout` in a shell), its standard error alone to 'output'. A case with
module '' is a shell command line, argv[0], run by /bin/sh in the same order. A case reads
nothing on its standard input (/dev/null).
"""
import atexit
import hashlib
import json
import os
import runpy
import select
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, 'tests')

_HELPER = {}  # 'process': the helper, 'environment': the os.environ it was started with.


def _helper() -> subprocess.Popen:
  """The helper for this environment: started at the first call, reused while it lives; one
  started afresh (the other stopped) where os.environ has changed since."""
  environment = {k: v for k, v in os.environ.items() if k != 'PYTEST_CURRENT_TEST'}  # pytest's, for each test.
  helper = _HELPER.get('process')
  if helper is not None and (helper.poll() is not None or _HELPER['environment'] != environment):
    _stop_helper()
    helper = None
  if helper is None:
    helper = subprocess.Popen([sys.executable, '-c', f'import sys; sys.path[:0] = {[ROOT, TESTS]!r}; '
                               'import entry_points; entry_points.serve_requests()'],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    _HELPER.update(process=helper, environment=environment)
  return helper


@atexit.register
def _stop_helper() -> None:
  helper = _HELPER.pop('process', None)
  if helper is not None and helper.poll() is None:
    helper.stdin.close()  # The end of its requests: it exits.
    try:
      helper.wait(timeout=10)
    except subprocess.TimeoutExpired:
      helper.kill()
      helper.wait()


def run_cases(cases: dict, folder: str, timeout: int = 900, cwd: str = ROOT, case_timeout: int = 180) -> dict:
  """{name: (module, argv[, stdout])} -> {name: {'rc', 'output', 'seconds'}}, all in the helper
  process, in order, run in `cwd` (ROOT and tests/ come first on sys.path wherever that is). A
  case still running after case_timeout seconds is killed (its 'rc': 'timeout')."""
  cases_path, results_path = os.path.join(folder, 'cases.json'), os.path.join(folder, 'results.json')
  with open(cases_path, 'w') as f:
    json.dump(cases, f)
  helper = _helper()
  helper.stdin.write(json.dumps({'cases': cases_path, 'results': results_path, 'cwd': os.path.abspath(cwd),
                                 'timeout': case_timeout}) + '\n')
  helper.stdin.flush()
  ready, _, _ = select.select([helper.stdout], [], [], timeout)
  answer = helper.stdout.readline() if ready else ''
  if answer.strip() != 'done':
    helper.kill()  # Timed out or died: the next call starts another.
    helper.wait()
    _HELPER.clear()
    raise RuntimeError(f'the entry-point helper {"gave no answer in " + str(timeout) + " s" if not ready else "died"} '
                       f'running {sorted(cases)}')
  with open(results_path) as f:
    return json.load(f)


def run_module(module: str, argv: list, timeout: int = 300, cwd: str = ROOT) -> subprocess.CompletedProcess:
  """`python -m MODULE ARGV` as subprocess.run(..., capture_output=True, text=True) gives it (the
  exit status, standard output and standard error), run in the helper; 'timeout' for the exit
  status of a command killed after `timeout` seconds."""
  folder = tempfile.mkdtemp(prefix='entry-point-')
  try:
    stdout_path = os.path.join(folder, 'stdout')
    outcome = run_cases({'case': (module, list(argv), stdout_path)}, folder, timeout=timeout + 60, cwd=cwd,
                        case_timeout=timeout)['case']
    with open(stdout_path, errors='replace') as f:
      stdout = f.read()
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  return subprocess.CompletedProcess([sys.executable, '-m', module, *argv], outcome['rc'], stdout, outcome['output'])


def serve_requests() -> None:
  """The helper process: imports the libraries, then serves one request a line on its standard
  input ({'cases', 'results', 'cwd', 'timeout'}), answering 'done' on its standard output, until EOF."""
  # What importing the libraries prints (nothing, today) is kept, and each case prints it first,
  # as a fresh `python -m` would; meanwhile the answers' pipe (standard output) stays clean.
  saved = os.dup(1), os.dup(2)
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    try:
      import bigjax.training  # pylint: disable=g-import-not-at-top,unused-import  # The libraries, once.
      import experiments.cli  # pylint: disable=g-import-not-at-top,unused-import
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
    out.seek(0)
    err.seek(0)
    imported = out.read(), err.read()
  for line in sys.stdin:
    request = json.loads(line)
    serve(request['cases'], request['results'], timeout=request['timeout'], cwd=request['cwd'], imported=imported)
    print('done', flush=True)


def serve(cases_path: str, results_path: str, timeout: int = 180, cwd: str = ROOT, imported=(b'', b'')) -> None:
  """Each case in a forked child (see the module docstring); `imported`: what the helper's imports
  wrote to standard output and error, which each case writes first."""
  with open(cases_path) as f:
    cases = json.load(f)
  results = {}
  for name, (module, argv, *stdout) in cases.items():
    log_path = f'{results_path}.{name}.log'
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # The child: the entry point, exactly as `python -m MODULE ARGV` run in cwd.
      os.chdir(cwd)
      os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # Not the helper's requests.
      fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
      os.dup2(os.open(stdout[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if stdout else fd, 1)
      os.dup2(fd, 2)
      if not module:  # A shell command line.
        os.execv('/bin/sh', ['sh', '-c', argv[0]])
      os.write(1, imported[0])
      os.write(2, imported[1])
      sys.argv = [os.path.join(ROOT, *module.split('.')) + '.py'] + argv
      code = 0
      try:
        runpy.run_module(module, run_name='__main__', alter_sys=True)
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
          print(e.code, file=sys.stderr)
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = 1
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code)  # pylint: disable=protected-access
    while True:
      done, status = os.waitpid(pid, os.WNOHANG)
      if done:
        code = os.waitstatus_to_exitcode(status)
        break
      if time.monotonic() - started > timeout:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        code = 'timeout'
        break
      time.sleep(0.02)
    with open(log_path, errors='replace') as f:
      results[name] = {'rc': code, 'output': f.read(), 'seconds': time.monotonic() - started}
  with open(results_path, 'w') as f:
    json.dump(results, f)


def snapshot(folder: str) -> dict:
  """{relative path: sha256} of every file under folder (and '' for each folder)."""
  digests = {}
  for root, dirs, names in os.walk(folder):
    for d in dirs:
      digests[os.path.relpath(os.path.join(root, d), folder) + '/'] = ''
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return digests
