"""The PyTorch seed LSTM (../shared/peers/torch_lstm.py) behind bigjax's own HTTP service.

  python -m experiments.torch_peer_serve --workdir=/tmp/torch_peer_sst2 --port=8001

The serving comparison of docs/deployment.md needs a peer answering through the same
server: the same Starlette app, micro-batcher, limits and uvicorn, only the model differs.
The model is torch_lstm.py's SentimentAnalysisModel, imported from the peers' folder (not
copied), with its vocabulary (whitespace tokens of SST-2 train) and its encoding. It
answers each text alone, as the seed model does (one forward call per text: the batcher
runs at --max_batch=1 and this model never pads).

The first run trains it (--epochs of torch_lstm.py's recipe: Adam 1e-3, batch 64, dropout
0.5) and keeps the weights and vocabulary in --workdir; later runs load them. Needs a
Python with torch==2.13.0 (the CPU build the peers were measured with) next to bigjax's
serving dependencies: `pip install -e ".[peers]"`.
"""
import importlib.util
import json
import os
import random
import signal
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from bigjax.serve import server
from experiments import common
from experiments.configs import base

_PEERS = os.path.join(os.path.dirname(base.SHARED_DATA), 'peers')

_WORKDIR = flags.DEFINE_string('workdir', None, 'Keeps the trained weights (model.pt) and vocabulary (vocab.json).')
_PEERS_DIR = flags.DEFINE_string('peers_dir', _PEERS, 'The folder holding torch_lstm.py.')
_DATA_DIR = flags.DEFINE_string('data_dir', os.path.join(base.SHARED_DATA, 'sst2'), "SST-2's train/dev/test.txt.")
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'Training epochs when --workdir has no weights yet.')
_SEED = flags.DEFINE_integer('seed', 1, 'torch and shuffling seed.')
_THREADS = flags.DEFINE_integer('threads', 2, 'torch.set_num_threads.')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to bind.')
_PORT = flags.DEFINE_integer('port', 8001, 'Port to bind.')
_MAX_QUEUE = flags.DEFINE_integer('max_queue', 1024, 'Texts waiting at most; beyond it requests get 503.')
_TRAIN_ONLY = flags.DEFINE_bool('train_only', False, 'Train (or check the weights load), then exit.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')

LABELS = ['0', '1']  # SST-2's label ids, as bigjax's SST-2 runs name them.


def import_peer(peers_dir: str):
  """torch_lstm.py as a module (it is a script in a folder, not a package)."""
  path = os.path.join(peers_dir, 'torch_lstm.py')
  if not os.path.isfile(path):
    raise common.ConfigError(f'{path} not found; point --peers_dir at the folder holding torch_lstm.py')
  spec = importlib.util.spec_from_file_location('torch_lstm_peer', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class TorchPeerModel:
  """torch_lstm.py's model in the shape bigjax.serve.app.ServedModel asks for."""

  def __init__(self, peer, model, stoi: dict, report: dict):
    import torch  # pylint: disable=import-outside-toplevel
    self._torch, self._peer, self._model, self._stoi = torch, peer, model.eval(), stoi
    self.labels = list(LABELS)
    self.buckets = []  # Never padded: each text is its own call.
    self._report = report

  def encode(self, texts):
    return [[self._stoi.get(w, self._peer.UNK) for w in text.split()] or [self._peer.UNK] for text in texts]

  def run_rows(self, rows, max_rows=None):
    del max_rows
    out = np.zeros((len(rows), len(self.labels)), np.float32)
    with self._torch.inference_mode():
      for i, row in enumerate(rows):  # Unbatched, as the seed model answers.
        x = self._torch.tensor([row])
        logits = self._model(x, self._torch.tensor([len(row)]))
        out[i] = self._torch.softmax(logits, -1)[0].numpy()
    return out

  def records(self, probabilities):
    return [{'label': self.labels[int(np.argmax(p))],
             'probabilities': {name: float(v) for name, v in zip(self.labels, p)}} for p in probabilities]

  def warm_up(self, max_rows: int) -> int:
    del max_rows
    self.run_rows(self.encode(['warm up']))
    return 1

  def describe(self) -> dict:
    return {'model': 'torch_lstm.py SentimentAnalysisModel (PyTorch peer)', 'labels': self.labels,
            'versions': {'torch': self._torch.__version__}, 'evaluation': self._report}


def train_or_load(workdir: str, peer, data_dir: str, epochs: int, seed: int):
  """(model, vocabulary, report): the weights in workdir, else trained with torch_lstm.py's recipe."""
  import torch  # pylint: disable=import-outside-toplevel
  weights, vocab_path, report_path = (os.path.join(workdir, name) for name in ('model.pt', 'vocab.json',
                                                                                'report.json'))
  if os.path.exists(weights):
    with open(vocab_path, encoding='utf-8') as f:
      stoi = json.load(f)
    with open(report_path, encoding='utf-8') as f:
      report = json.load(f)
    model = peer.SentimentAnalysisModel(len(stoi), 300, 256, 0.5)
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model, stoi, report
  splits = {}
  for name in ('train', 'dev', 'test'):
    path = os.path.join(data_dir, f'{name}.txt')
    if not os.path.isfile(path):
      raise common.ConfigError(f'{path} not found; point --data_dir at SST-2 (LABEL tokens... per line)')
    splits[name] = peer.read_split(path)
  stoi = peer.build_vocab(splits['train'][0])
  encoded = {name: peer.encode(*splits[name], stoi) for name in splits}
  torch.manual_seed(seed)
  model = peer.SentimentAnalysisModel(len(stoi), 300, 256, 0.5)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = torch.nn.CrossEntropyLoss()
  ids, labels = encoded['train']
  order = list(range(len(ids)))
  rng = random.Random(seed)
  began = time.perf_counter()
  for epoch in range(epochs):  # torch_lstm.py's own step: shuffled batches of 64, Adam, cross-entropy.
    rng.shuffle(order)
    for start in range(0, len(order), 64):
      x, lengths, y = peer.make_batch(ids, labels, torch.tensor(order[start:start + 64]))
      optimizer.zero_grad()
      loss_fn(model(x, lengths), y).backward()
      optimizer.step()
    logging.warning('epoch %d/%d: dev accuracy %.4f (%.0f s)', epoch + 1, epochs,
                    peer.accuracy(model, *encoded['dev']), time.perf_counter() - began)
  report = {'epochs': epochs, 'dev_accuracy': peer.accuracy(model, *encoded['dev']),
            'test_accuracy': peer.accuracy(model, *encoded['test']), 'train_s': time.perf_counter() - began}
  os.makedirs(workdir, exist_ok=True)
  with open(vocab_path, 'w', encoding='utf-8') as f:
    json.dump(stoi, f)
  with open(report_path, 'w', encoding='utf-8') as f:
    json.dump(report, f)
  torch.save(model.state_dict(), weights + '.tmp')
  os.replace(weights + '.tmp', weights)  # Last: a killed run leaves no weights without their vocabulary.
  return model, stoi, report


def main(argv):
  logging.set_verbosity(logging.WARNING)
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: sys.exit(0))

  def run():
    if len(argv) > 1:
      raise common.ConfigError(f'unexpected arguments {argv[1:]}; flags are written --name=value')
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise common.ConfigError('this Python has no torch: pip install -e ".[peers]" (torch==2.13.0)') from None
    torch.set_num_threads(_THREADS.value)
    peer = import_peer(_PEERS_DIR.value)
    model, stoi, report = train_or_load(_WORKDIR.value, peer, _DATA_DIR.value, _EPOCHS.value, _SEED.value)
    logging.warning('torch peer: dev %.4f, test %.4f', report['dev_accuracy'], report['test_accuracy'])
    if _TRAIN_ONLY.value:
      return
    server.serve(TorchPeerModel(peer, model, stoi, report), host=_HOST.value, port=_PORT.value, max_batch=1,
                 max_queue=_MAX_QUEUE.value, warm_up=True)

  common.exit_on_user_error(run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=common.parse_flags)
