"""The PyTorch peer LSTM (../shared/peers/torch_lstm.py) with the rest of a bigjax recipe.

Runs under the peer's Python (torch and numpy; no bigjax). It adds three things the peer
has no flag for, without touching the peer's loop, timing or evaluation: a starting
embedding table (rows named by token, as benchmarks.time_to_accuracy writes it), the
forget-gate bias at initialization, and global-norm gradient clipping before each Adam
step (torch.nn.utils.clip_grad_norm_, what optax.clip_by_global_norm does). Every other
flag goes to torch_lstm.py unchanged.

  python benchmarks/torch_peer_recipe.py --peers_dir=../shared/peers --init_table=table.npz \
      --forget_bias=1 --clip_norm=1 --data_dir=DIR --lr=2e-3 --epochs=10
"""
import argparse
import sys

import numpy as np


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--peers_dir', required=True, help='Folder of torch_lstm.py.')
  parser.add_argument('--init_table', default='', help='npz with tokens [V] and table [V, E]; empty: torch init.')
  parser.add_argument('--forget_bias', type=float, default=0.0, help='Initial forget-gate bias (both torch '
                      'biases summed), as bigjax model.lstm.forget_bias.')
  parser.add_argument('--clip_norm', type=float, default=0.0, help='Global gradient norm clip; 0: none.')
  return parser.parse_known_args()


def main():
  ours, peer_args = parse_args()
  sys.path.insert(0, ours.peers_dir)
  import torch  # pylint: disable=import-outside-toplevel
  import torch_lstm  # pylint: disable=import-outside-toplevel

  vocab = {}  # The peer's token -> row, captured when it builds it.
  build_vocab = torch_lstm.build_vocab

  def capture_vocab(sents):
    vocab.update(build_vocab(sents))
    return vocab

  class Model(torch_lstm.SentimentAnalysisModel):

    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      with torch.no_grad():
        if ours.forget_bias:
          hidden = self.lstm.hidden_size  # torch's gate order: input, forget, cell, output.
          self.lstm.bias_ih_l0[hidden:2 * hidden].fill_(ours.forget_bias)
          self.lstm.bias_hh_l0[hidden:2 * hidden].zero_()
        if ours.init_table:
          with np.load(ours.init_table) as saved:  # Each saved[...] reads the file again: once each.
            tokens, table = saved['tokens'].tolist(), saved['table']
          row_of = {token: i for i, token in enumerate(tokens)}
          missing = [t for t in vocab if t not in row_of and t != '<pad>']
          if missing:
            raise SystemExit(f'{ours.init_table}: no row for {len(missing)} peer tokens, e.g. {missing[:5]}')
          # The peer's padding row stays zero (padding_idx).
          peer_rows, saved_rows = zip(*[(i, row_of[t]) for t, i in vocab.items() if t != '<pad>'])
          self.embedding.weight[list(peer_rows)] = torch.from_numpy(table[list(saved_rows)])

  optimizer = torch.optim.Adam

  class ClippedAdam(optimizer):

    def step(self, closure=None):  # pylint: disable=arguments-differ
      torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g['params']], ours.clip_norm)
      return super().step(closure)

  torch_lstm.build_vocab = capture_vocab
  torch_lstm.SentimentAnalysisModel = Model
  if ours.clip_norm:
    torch.optim.Adam = ClippedAdam
  sys.argv = [torch_lstm.__file__, *peer_args]
  torch_lstm.main()


if __name__ == '__main__':
  main()
