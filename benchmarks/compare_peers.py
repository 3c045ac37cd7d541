"""Train speed of bigjax against the PyTorch peers, side by side in one run.

  python -m benchmarks.compare_peers --peer_python=/path/to/venv-with-torch/bin/python --rounds=3

For each model the two programs alternate (bigjax, torch, bigjax, torch, ...) so that any
drift of the machine hits both; the table shows medians and their ratio. Same data
(SST-2), same tokenization (whole words, vocabulary = train words), embed 300, hidden
256, batch 64; torch gets --threads 2, XLA uses the machine's 2 cores.

bigjax keeps freed host memory in the process (bigjax/hostmem.py; glibc mallopt), which
torch does not do by itself; the peers' README shows that the same allocator setting
speeds torch up too. So torch runs twice per round, with the default allocator ("what
anyone gets") and with bigjax's setting through the environment ("same allocator"), and
both ratios are reported. The like-for-like figure is the one against "same allocator".

bigjax's LSTM runs once per round for each --lstm_dtypes value: float32 computes what torch
computes; bfloat16 gives its matmuls bf16 operands with f32 sums (model.lstm.dtype).

bigjax's figure is its steady state (every shape compiled); torch's is its own
train_tokens_per_s after 20 warm-up steps, over --peer_steps steps. The peers' README finds
torch's first epochs slower than later ones, so a short --peer_steps favours bigjax.

`--models=lm` races the language model of lm_imdb.py (IMDB text, 30k vocabulary, 64 × 70
token windows, sampled softmax over 1,024 negatives) against benchmarks/torch_peer_lm.py,
the same model and step in PyTorch, trained on the very windows bigjax reads (written once
per comparison by peers.write_lm_peer_data). All of a language model's tokens are real.
"""
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Optional

from absl import app
from absl import flags

from bigjax import hostmem

PEER_STEPS = {'lstm': 200, 'mlp': 400, 'lm': 60}  # Defaults: the peers' README short-run rows; lm: ~2 min.
_PEER_PYTHON = flags.DEFINE_string('peer_python', sys.executable, 'Python that has torch installed.')
_PEERS = flags.DEFINE_string('peers_dir', os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'peers'),
                             'Folder of torch_lstm.py and torch_bow_mlp.py.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating rounds per model.')
_PEER_STEPS = flags.DEFINE_integer('peer_steps', 0, "torch's --max_steps; 0: the peers' README short runs "
                                   f'({PEER_STEPS}). 1090 is 10 SST-2 epochs, past its warm-up.')
_MODELS = flags.DEFINE_list('models', ['lstm', 'mlp'], 'Which models to compare: lstm, mlp, lm.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also write the figures here.')
_LSTM_DTYPES = flags.DEFINE_list('lstm_dtypes', ['float32', 'bfloat16'],
                                 "bigjax's LSTM runs once per round in each of these model.lstm.dtype values "
                                 '(matmul operands; torch computes in float32).')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_SCRIPT = {'lstm': 'torch_lstm.py', 'mlp': 'torch_bow_mlp.py'}
LM_PEER = os.path.join(ROOT, 'benchmarks', 'torch_peer_lm.py')
LM_CONFIG = 'experiments/configs/lm_imdb.py'
SAME_SETUP = ['--config.data.tokenizer=word', '--config.data.min_frequency=1', '--config.data.vocab_size=20000',
              '--config.data.max_len=64', '--config.model.embed_dim=300',
              '--config.train.batch_size=64']


def _json_of(command: list, out: str, extra_env: Optional[dict] = None, cwd: Optional[str] = None) -> dict:
  """Runs one side (its output hidden) and reads the figures it wrote to `out`."""
  subprocess.run([*command, f'--json_out={out}'], cwd=cwd, check=True, capture_output=True,
                 env=dict(os.environ, **(extra_env or {})))
  with open(out, encoding='utf-8') as f:
    return json.load(f)


def peer_steps(model: str) -> int:
  return _PEER_STEPS.value or PEER_STEPS[model]


def run_bigjax_lm(out: str, dtype: str) -> dict:
  r = _json_of([sys.executable, '-m', 'benchmarks.benchmark', f'--config={LM_CONFIG}',
                f'--config.model.lstm.dtype={dtype}', '--windows=5', '--window_steps=10'], out, cwd=ROOT)
  return {'tokens_per_s': r['train']['tokens_per_s']}


def run_peer_lm(out: str, extra_env: dict, stream: str) -> dict:
  r = _json_of([_PEER_PYTHON.value, LM_PEER, f'--stream={stream}', '--threads=2', f'--steps={peer_steps("lm")}'],
               out, extra_env)
  return {'tokens_per_s': r['train_tokens_per_s'], 'first_loss': r['first_loss'], 'last_loss': r['last_loss']}


def write_lm_stream(folder: str) -> str:
  from benchmarks import peers  # pylint: disable=import-outside-toplevel  (jax and the data code: lm only)
  from experiments.configs import lm_imdb  # pylint: disable=import-outside-toplevel
  path = os.path.join(folder, 'lm_stream.npz')
  peers.write_lm_peer_data(lm_imdb.get_config(), path, peer_steps('lm'))
  return path


def run_bigjax(model: str, out: str, dtype: str) -> dict:
  overrides = [f'--config.model.{model}.hidden_dim=256']
  if model == 'lstm':
    overrides.append(f'--config.model.lstm.dtype={dtype}')
  r = _json_of([sys.executable, '-m', 'benchmarks.benchmark', f'--config=experiments/configs/{model}_sst2.py',
                *SAME_SETUP, *overrides], out, cwd=ROOT)
  return {'examples_per_s': r['train']['examples_per_s'], 'tokens_per_s': r['train']['tokens_per_s'],
          'with_input_pipeline_examples_per_s': r['train']['pipeline_examples_per_s']}


PEER_SETTINGS = {'torch': {}, 'torch_same_allocator': hostmem.KEEP_FREED_MEMORY_ENV}


def run_peer(model: str, out: str, extra_env: dict) -> dict:
  data = os.path.join(_PEERS.value, '..', 'data', 'sst2')
  r = _json_of([_PEER_PYTHON.value, os.path.join(_PEERS.value, PEER_SCRIPT[model]), f'--data_dir={data}',
                '--threads=2', f'--max_steps={peer_steps(model)}', '--embed_dim=300', '--hidden_dim=256',
                '--batch_size=64'], out, extra_env)
  return {'examples_per_s': r['train_examples_per_s'], 'tokens_per_s': r['train_tokens_per_s']}


def main(argv):
  del argv
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for model in _MODELS.value:
      dtypes = _LSTM_DTYPES.value if model in ('lstm', 'lm') else ['float32']
      if model == 'lm':
        stream = write_lm_stream(tmp)
        sides = {f'bigjax_{dtype}': functools.partial(run_bigjax_lm, dtype=dtype) for dtype in dtypes}
        sides.update({peer: functools.partial(run_peer_lm, extra_env=env, stream=stream)
                      for peer, env in PEER_SETTINGS.items()})
      else:
        sides = {f'bigjax_{dtype}': functools.partial(run_bigjax, model, dtype=dtype) for dtype in dtypes}
        sides.update({peer: functools.partial(run_peer, model, extra_env=env) for peer, env in PEER_SETTINGS.items()})
      runs = {side: [] for side in sides}
      for i in range(_ROUNDS.value):
        for side, run in sides.items():
          runs[side].append(run(os.path.join(tmp, f'{side}_{model}_{i}.json')))
        print(f'{model} round {i + 1}: ' + ', '.join(f'{side} {rs[-1]}' for side, rs in runs.items()), flush=True)
      median = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
      results[model] = {'runs': runs, 'median': median, 'ratios': {}}
      for side in sides:
        for peer in PEER_SETTINGS:
          if side.startswith('bigjax'):
            results[model]['ratios'][f'{side}_vs_{peer}'] = {
                k: median[side][k] / median[peer][k] for k in ('tokens_per_s', 'examples_per_s') if k in median[peer]}
  print(f'{"model":<6} {"bigjax matmuls":<15} {"bigjax tokens/s":>16} {"torch tokens/s":>15} {"ratio":>6} '
        f'{"torch same-allocator tokens/s":>30} {"ratio":>6}')
  for model, r in results.items():
    m = r['median']
    for side in (s for s in m if s.startswith('bigjax')):
      ratio = lambda peer: r['ratios'][f'{side}_vs_{peer}']['tokens_per_s']
      print(f'{model:<6} {side.split("_", 1)[1]:<15} {m[side]["tokens_per_s"]:>16.0f} {m["torch"]["tokens_per_s"]:>15.0f} '
            f'{ratio("torch"):>6.2f} {m["torch_same_allocator"]["tokens_per_s"]:>30.0f} '
            f'{ratio("torch_same_allocator"):>6.2f}')
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
