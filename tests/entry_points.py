"""Runs entry points (`python -m experiments.X ARGV`) many times, cheaply, for tests.

A fresh interpreter per case would spend ~5 s importing JAX each. One helper process
imports the libraries once (no JAX backend, no threads yet), then forks a child per case
that runs the module as __main__ with the case's argv: the same flag parsing, config
loading and error handling as the real command.

A case is (module, argv) or (module, argv, stdout): its standard output then goes to the
file `stdout` (as `> stdout` in a shell), its standard error alone to 'output'. A case with
module '' is a shell command line, argv[0], run by /bin/sh in the same order.
"""
import hashlib
import json
import os
import runpy
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, 'tests')


def run_cases(cases: dict, folder: str, timeout: int = 900, cwd: str = ROOT) -> dict:
  """{name: (module, argv[, stdout])} -> {name: {'rc', 'output', 'seconds'}}, all in one helper
  process, in order, run in `cwd` (ROOT and tests/ come first on sys.path wherever that is)."""
  cases_path, results_path = os.path.join(folder, 'cases.json'), os.path.join(folder, 'results.json')
  with open(cases_path, 'w') as f:
    json.dump(cases, f)
  subprocess.run([sys.executable, '-c', f'import sys; sys.path[:0] = {[ROOT, TESTS]!r}; import entry_points; '
                  f'entry_points.serve({cases_path!r}, {results_path!r})'], cwd=cwd, check=True, timeout=timeout)
  with open(results_path) as f:
    return json.load(f)


def serve(cases_path: str, results_path: str, timeout: int = 180) -> None:
  """The helper process: each case in a forked child (see the module docstring)."""
  import bigjax.training  # pylint: disable=g-import-not-at-top,unused-import  # The libraries, once.
  import experiments.cli  # pylint: disable=g-import-not-at-top,unused-import
  with open(cases_path) as f:
    cases = json.load(f)
  results = {}
  for name, (module, argv, *stdout) in cases.items():
    log_path = f'{results_path}.{name}.log'
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # The child: the entry point, exactly as `python -m MODULE ARGV`.
      fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
      os.dup2(os.open(stdout[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if stdout else fd, 1)
      os.dup2(fd, 2)
      if not module:  # A shell command line.
        os.execv('/bin/sh', ['sh', '-c', argv[0]])
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
