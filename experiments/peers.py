"""Running the PyTorch peers (../shared/peers) on bigjax's data and recipe.

No flags here: experiments.time_to_accuracy is the command line, and tests import this.
"""
import json
import os
import re
from typing import Optional

import numpy as np

from bigjax.errors import ConfigError
from bigjax.models import registry
from experiments import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bigjax's log line for a checkpoint with train.test_at_checkpoints.
BIGJAX_CURVE = re.compile(r'step (\d+): dev accuracy ([\d.]+), macro-F1 [\d.]+, test accuracy ([\d.]+)')


def check_recipe(config) -> None:
  """What torch_lstm.py can also do; anything else would not be the same recipe."""
  needed = {'model.name': 'lstm', 'model.num_layers': 1, 'model.bidirectional': False, 'optim.name': 'adam',
            'optim.schedule': 'constant', 'optim.warmup_steps': 0, 'train.accum_steps': 1, 'parallel': 'none',
            'checkpoint.every_steps': 0, 'train.steps': 0, 'model.dtype': 'float32'}
  wrong = [f'{key}={common.config_value(config, key)!r} (needs {value!r})' for key, value in needed.items()
           if common.config_value(config, key) != value]
  if wrong:
    raise ConfigError(f'the PyTorch peer cannot follow this recipe: {", ".join(wrong)}')


def write_peer_data(config, folder: str) -> dict:
  """The config's splits, tokenized as bigjax does, in torch_lstm.py's layout; and the start table."""
  exp = common.build_experiment(config, workdir=None)  # Its data, tokenizer and initial state are the run's.
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
    module, name = registry.EMBEDDING_TABLE
    table = np.asarray(params[module][name], np.float32)
    tokens = np.asarray(tokenizer.tokens(range(tokenizer.vocab_size)))
    info['init_table'] = os.path.join(folder, 'init_table.npz')
    np.savez(info['init_table'], tokens=tokens, table=table)
  return info


def parse_bigjax_curve(line: str):
  m = BIGJAX_CURVE.search(line)
  return m and {'step': int(m[1]), 'dev_acc': float(m[2]), 'test_acc': float(m[3])}


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
  command = [python, os.path.join(ROOT, 'experiments', 'torch_peer_recipe.py'), f'--peers_dir={peers_dir}',
             f'--forget_bias={m.forget_bias}', f'--clip_norm={o.clip_norm}', f'--data_dir={data_dir}',
             '--threads=2', f'--embed_dim={m.embed_dim}', f'--hidden_dim={m.hidden_dim}', f'--dropout={m.dropout}',
             f'--batch_size={t.batch_size}', f'--lr={o.learning_rate}', f'--epochs={t.epochs}',
             f'--seed={config.seed}', f'--json_out={json_out}']
  if init_table:
    command.append(f'--init_table={init_table}')
  return command
