"""torch_lstm.py's model (../shared/peers) trained or reloaded, and wrapped as a
bigjax.serve.app.ServedModel: what benchmarks.torch_peer_serve serves. No flags here, so
tests import it."""
import importlib.util
import json
import os
import random
import time

from absl import logging
import numpy as np

from bigjax.errors import ConfigError

LABELS = ['0', '1']  # SST-2's label ids, as bigjax's SST-2 runs name them.


def import_peer(peers_dir: str):
  """torch_lstm.py as a module (it is a script in a folder, not a package)."""
  path = os.path.join(peers_dir, 'torch_lstm.py')
  if not os.path.isfile(path):
    raise ConfigError(f'{path} not found; point --peers_dir at the folder holding torch_lstm.py')
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
      raise ConfigError(f'{path} not found; point --data_dir at SST-2 (LABEL tokens... per line)')
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
