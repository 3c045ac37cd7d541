"""A PyTorch LSTM language model of lm_imdb.py's sizes and recipe: the peer of experiments.pretrain.

Runs under any Python with torch and numpy (no bigjax). It trains on the token stream
benchmarks.compare_peers writes from bigjax's own data (`peers.write_lm_peer_data`): the
same rows of the same epoch, cut into the same truncated-BPTT windows, with the state
carried from window to window and detached at each window's start. The model and step
follow bigjax's `lstm_lm` (bigjax/models/lstm.py, bigjax/tasks/language_model.py):

  embedding [V, E] -> token dropout (whole vectors) -> locked dropout -> LSTM(E, H) ->
  locked dropout -> Linear(H, E) -> logits against the embedding table itself (tied), plus
  a bias; a sampled softmax over K negatives shared by the batch, drawn from the stream's
  unigram^0.75 distribution by inverse CDF, each logit corrected by log(K q), accidental
  hits removed; mean NLL per target; global-norm clipping; Adam.

Reports steady-state training speed in real tokens/s (steps after --warmup_steps, training
time only) and the sampled loss of the first and last timed steps; the last line printed
is one JSON object.

  python benchmarks/torch_peer_lm.py --stream=lm_stream.npz --steps=60 --json_out=peer.json
"""
import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--stream', required=True, help='npz: rows int32[B, L] (an epoch of the stream), '
                      'log_q float32[V] (the sampling distribution).')
  parser.add_argument('--embed_dim', type=int, default=300)
  parser.add_argument('--hidden_dim', type=int, default=256)
  parser.add_argument('--window', type=int, default=70, help='BPTT window (tokens per row per step).')
  parser.add_argument('--negatives', type=int, default=1024)
  parser.add_argument('--dropout', type=float, default=0.25, help='Locked dropout on the LSTM input and output.')
  parser.add_argument('--token_dropout', type=float, default=0.1)
  parser.add_argument('--lr', type=float, default=2e-3)
  parser.add_argument('--clip_norm', type=float, default=0.25)
  parser.add_argument('--steps', type=int, default=60, help='Train steps in all, warm-up included.')
  parser.add_argument('--warmup_steps', type=int, default=10, help='Untimed first steps.')
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json_out', default='')
  return parser.parse_args()


def locked_dropout(x, rate: float, training: bool):
  """One mask per sequence, shared over time: x [B, T, D]."""
  if not training or rate == 0:
    return x
  mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - rate) / (1 - rate)
  return x * mask


class LanguageModel(nn.Module):

  def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, dropout: float, token_dropout: float):
    super().__init__()
    self.embedding = nn.Embedding(vocab_size, embed_dim)
    self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
    self.projection = nn.Linear(hidden_dim, embed_dim)
    self.bias = nn.Parameter(torch.zeros(vocab_size))
    self.dropout, self.token_dropout = dropout, token_dropout

  def forward(self, inputs, state, targets, negatives):
    """Sampled logits [B*T, 1 + K] (the target's first) and the state after the window."""
    x = self.embedding(inputs)
    if self.training and self.token_dropout:
      keep = x.new_empty(x.shape[0], x.shape[1], 1).bernoulli_(1 - self.token_dropout) / (1 - self.token_dropout)
      x = x * keep
    states, state = self.lstm(locked_dropout(x, self.dropout, self.training), state)
    flat = self.projection(locked_dropout(states, self.dropout, self.training)).reshape(-1, x.shape[-1])
    table, rows = self.embedding.weight, targets.reshape(-1)
    target_logits = (flat * table[rows]).sum(-1) + self.bias[rows]
    negative_logits = flat @ table[negatives].T + self.bias[negatives]
    return torch.cat([target_logits[:, None], negative_logits], dim=1), state


def main():
  args = parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  with np.load(args.stream) as saved:
    rows, log_q = torch.from_numpy(saved['rows'].astype(np.int64)), torch.from_numpy(saved['log_q'])
  batch, length = rows.shape
  windows = (length - 1) // args.window
  if args.steps > windows:
    raise SystemExit(f'{args.stream}: {windows} windows of {args.window} tokens, fewer than --steps={args.steps}')
  model = LanguageModel(len(log_q), args.embed_dim, args.hidden_dim, args.dropout, args.token_dropout)
  optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
  cdf = torch.cumsum(log_q.exp().double(), 0)
  log_k = math.log(args.negatives)
  model.train()
  state, times, losses = None, [], []
  for step in range(args.steps):
    start = time.perf_counter()
    inputs = rows[:, step * args.window:(step + 1) * args.window]
    targets = rows[:, step * args.window + 1:(step + 1) * args.window + 1]
    negatives = torch.searchsorted(cdf, torch.rand(args.negatives, dtype=torch.float64) * cdf[-1]).clamp_(
        max=len(log_q) - 1)
    if state is not None:
      state = tuple(s.detach() for s in state)  # Truncated BPTT: the state goes on, its gradient stops.
    logits, state = model(inputs, state, targets, negatives)
    flat_targets = targets.reshape(-1)
    logits = logits - (log_k + torch.cat([log_q[flat_targets][:, None],
                                          log_q[negatives][None, :].expand(len(flat_targets), -1)], dim=1))
    hits = negatives[None, :] == flat_targets[:, None]
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(hits, -1e9)], dim=1)
    loss = nn.functional.cross_entropy(logits, torch.zeros_like(flat_targets))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
    optimizer.step()
    losses.append(float(loss))  # Also waits for the step.
    times.append(time.perf_counter() - start)
  timed = times[args.warmup_steps:]
  tokens = batch * args.window
  report = {'train_tokens_per_s': tokens * len(timed) / sum(timed), 'timed_steps': len(timed),
            'seconds_per_step': sum(timed) / len(timed), 'first_loss': losses[args.warmup_steps],
            'last_loss': losses[-1], 'batch_size': batch, 'window': args.window, 'vocab_size': len(log_q),
            'torch': torch.__version__, 'threads': args.threads}
  print(json.dumps(report))
  if args.json_out:
    with open(args.json_out, 'w', encoding='utf-8') as f:
      json.dump(report, f)


if __name__ == '__main__':
  main()
