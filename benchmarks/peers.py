"""Running the PyTorch peers (../shared/peers) on bigjax's data and recipe.

No flags here: benchmarks.time_to_accuracy is the command line, and tests import this.
bigjax's side of a race is read from its workdir's metrics.jsonl (`MetricsFollower`,
`BigjaxCurve`), never from its log lines; the peer's is the JSON lines it prints.
"""
import copy
import json
import os
from typing import Optional

import numpy as np

from bigjax import experiment
from bigjax import transfer
from bigjax.config import checks
from bigjax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_recipe(config) -> None:
  """What torch_lstm.py can also do; anything else would not be the same recipe."""
  needed = {'model.name': 'lstm', 'model.lstm.num_layers': 1, 'model.lstm.bidirectional': False,
            'optim.name': 'adam', 'optim.schedule': 'constant', 'optim.warmup_steps': 0, 'optim.param_groups': '',
            'train.accum_steps': 1, 'parallel': 'none', 'checkpoint.every_steps': 0, 'train.steps': 0,
            'model.lstm.dtype': 'float32', 'init.checkpoint': ''}
  wrong = [f'{key}={checks.config_value(config, key)!r} (needs {value!r})' for key, value in needed.items()
           if checks.config_value(config, key) != value]
  if wrong:
    raise ConfigError(f'the PyTorch peer cannot follow this recipe: {", ".join(wrong)}')


def write_peer_data(config, folder: str) -> dict:
  """The config's splits, tokenized as bigjax does, in torch_lstm.py's layout; and the start table."""
  config = copy.deepcopy(config)
  config.cache.data = False  # The texts themselves are written out: they must be read.
  exp = experiment.build_experiment(config, workdir=None)  # Its data, tokenizer and initial state are the run's.
  dataset, tokenizer = exp.dataset, exp.tokenizer
  os.makedirs(folder, exist_ok=True)
  for name in ('train', 'dev', 'test'):
    split = dataset.splits[name]
    rows = tokenizer.encode(split.texts, config.data.max_len, config.data.keep)
    with open(os.path.join(folder, f'{name}.txt'), 'w', encoding='utf-8') as f:
      for label, row in zip(split.labels, rows):
        f.write(' '.join([str(int(label)), *tokenizer.tokens(row)]) + '\n')
  info = {'vocab_size': tokenizer.vocab_size, 'splits': {n: len(s.texts) for n, s in dataset.splits.items()}}
  if config.init.embeddings:
    params = exp.init_state().params
    module, name = transfer.EMBEDDING_TABLE
    table = np.asarray(params[module][name], np.float32)
    tokens = np.asarray(tokenizer.tokens(range(tokenizer.vocab_size)))
    info['init_table'] = os.path.join(folder, 'init_table.npz')
    np.savez(info['init_table'], tokens=tokens, table=table)
  return info


def write_lm_peer_data(config, path: str, steps: int) -> dict:
  """benchmarks/torch_peer_lm.py's input: the first `steps` windows of a language model's
  first epoch, exactly as bigjax's run reads them, and its sampling distribution (npz)."""
  exp = experiment.build_lm_experiment(config, workdir=None)
  batches = exp.train_batches
  if steps > batches.steps_per_epoch:
    raise ConfigError(f'{steps} peer steps are more than the {batches.steps_per_epoch} windows of an epoch')
  rows = batches.epoch_rows(0)[:, :steps * batches.window + 1]
  np.savez(path, rows=rows, log_q=np.asarray(exp.task.log_q, np.float32))
  return {'rows': rows.shape[0], 'window': batches.window, 'vocab_size': len(exp.task.log_q),
          'negatives': exp.task.negatives}


class MetricsFollower:
  """The records a run appends to its metrics.jsonl, read by polling while it runs.

  poll() returns the records completed since the last call. The writer appends and flushes
  line by line, so a reader can see a partial last line: only lines ending in a newline
  are parsed, the rest is read again next time. A resume rewrites the file (os.replace)
  before appending: a new file, or one shorter than what was read, is read from its start
  again, so records it kept come back; `since` (wall-clock seconds) keeps only records
  whose 'time' is at or after it — those of an attempt launched then, not of earlier ones.
  """

  def __init__(self, path: str, since: Optional[float] = None):
    self.path = path
    self.since = since
    self._file_id = None
    self._offset = 0

  def poll(self) -> list[dict]:
    try:
      f = open(self.path, 'rb')
    except FileNotFoundError:
      return []
    with f:
      stat = os.fstat(f.fileno())
      if (stat.st_dev, stat.st_ino) != self._file_id or stat.st_size < self._offset:
        self._file_id, self._offset = (stat.st_dev, stat.st_ino), 0
      f.seek(self._offset)
      data = f.read()
    complete = data[:data.rfind(b'\n') + 1]
    self._offset += len(complete)
    records = []
    for line in complete.splitlines():
      try:
        record = json.loads(line)
      except ValueError:  # Not written by MetricWriter; nothing to follow in it.
        continue
      if isinstance(record, dict) and (self.since is None or record.get('time', 0) >= self.since):
        records.append(record)
    return records


class BigjaxCurve:
  """bigjax's test curve (train.test_at_checkpoints) from a run's metrics.jsonl, as it grows.

  poll() returns the new points, one per 'test_curve' record (written right after the
  'dev' record of its checkpoint): step, dev_acc, test_acc and time (the record's wall
  clock, when the test accuracy was known).
  """

  def __init__(self, workdir: str):
    self._records = MetricsFollower(os.path.join(workdir, 'metrics.jsonl'))
    self._dev_accuracy = {}

  def poll(self) -> list[dict]:
    points = []
    for record in self._records.poll():
      if record.get('kind') == 'dev':
        self._dev_accuracy[record['step']] = record['accuracy']
      elif record.get('kind') == 'test_curve':
        points.append({'step': record['step'], 'dev_acc': self._dev_accuracy.get(record['step']),
                       'test_acc': record['accuracy'], 'time': record['time']})
    return points


def parse_peer_curve(line: str):
  if not line.startswith('{"epoch"'):
    return None
  rec = json.loads(line)
  return {'epoch': rec['epoch'], 'step': rec['steps'], 'dev_acc': rec['dev_acc'], 'test_acc': rec['test_acc'],
          'train_s': rec['train_s'], 'eval_s': rec['eval_s']}


def lstm_command(config, python: str, peers_dir: str, data_dir: str, init_table: Optional[str],
                 json_out: str) -> list[str]:
  """torch_lstm.py (through torch_peer_recipe.py) with the config's recipe."""
  m, o, t = config.model, config.optim, config.train
  lstm = m.lstm
  command = [python, os.path.join(ROOT, 'benchmarks', 'torch_peer_recipe.py'), f'--peers_dir={peers_dir}',
             f'--forget_bias={lstm.forget_bias}', f'--clip_norm={o.clip_norm}', f'--data_dir={data_dir}',
             '--threads=2', f'--embed_dim={m.embed_dim}', f'--hidden_dim={lstm.hidden_dim}', f'--dropout={m.dropout}',
             f'--batch_size={t.batch_size}', f'--lr={o.learning_rate}', f'--epochs={t.epochs}',
             f'--seed={config.seed}', f'--json_out={json_out}']
  if init_table:
    command.append(f'--init_table={init_table}')
  return command
