"""bigjax's MLP classifier trained with Opacus's DP-SGD in PyTorch: the peer of bigjax's private step.

Runs under any Python with torch, opacus and numpy (no bigjax); benchmarks.dp_speed runs it in a
subprocess of its own, so torch and JAX never share a process, with torch.set_num_threads(--threads).

The model is bigjax's `mlp` (bigjax/models/mlp.py), layer for layer: token embeddings (N(0, std^2)),
optionally hashed bigram embeddings (bigjax's hash, in int64 arithmetic mod 2^32), the mean over the
real positions with word dropout, then [dropout, Linear, ReLU] x num_layers, dropout, Linear.
Opacus makes it private: PrivacyEngine.make_private with Poisson sampling, flat clipping at
--clip_norm, noise --noise_multiplier * --clip_norm, the mean over the expected batch, Adam.

Grad-sample mode (--grad_sample_mode), as Opacus 1.6 offers them:
  ghost (the default): Opacus's fast gradient clipping (GradSampleModuleFastGradientClipping with
    ghost clipping): per-example gradient *norms* from the layers' activations and backprops
    (nn.Linear: |a| |g|; nn.Embedding: the sum over each example's distinct rows of its summed
    slot gradients, embedding_norm_sample.py), then a second backward pass of the loss weighted
    by the clipping factors. No example's [V, E] table gradient is ever formed: what bigjax's
    ghost norms do too, so like against like, and Opacus's fastest mode for this model.
  hooks: the classic per-sample gradients (grad_sample/embedding.py scatters each example's slot
    gradients into a zeroed [B, V, E] tensor: 9.4 GB a step at SST-2's 256 x 30,522 x 300, which
    is why it is not the default; it works, slowly, on a machine with the memory).
  functorch: torch.func's vmap over per-example grads for every layer (force_functorch); it forms
    the same [B, V, E] tensors as hooks.

Timing: make_private builds everything over a synthetic dataset of --train_examples rows (Poisson
rate --batch_size / --train_examples, rounded as Opacus rounds it: 1 / len(loader)), one Poisson
batch is drawn to check the sampler; the timed steps then take one fixed batch of --batch_size
rows x --width tokens (every token real; ids from numpy's generator with --seed, as
benchmarks.dp_speed draws bigjax's real rows), the expected Poisson batch in a fixed shape. A step:
zero_grad, forward, cross-entropy, backward (two passes in ghost mode), optimizer.step (noise,
division by the expected batch, Adam, the accountant's history). Reports the median step time over
the steps after --warmup_steps; the last line printed is one JSON object.

  python benchmarks/opacus_peer.py --vocab_size=30522 --embed_dim=300 --hidden_dim=256 --batch_size=256 \
      --width=64 --train_examples=6920 --steps=10 --json_out=peer.json
"""
import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

GRAD_SAMPLE_MODES = ('ghost', 'hooks', 'functorch')
_MASK32 = 0xFFFFFFFF


def bigram_ids(token_ids: torch.Tensor, buckets: int) -> torch.Tensor:
  """bigjax.models.mlp.bigram_ids in int64: uint32 products and xors, kept mod 2^32 by masking."""
  first = token_ids.to(torch.int64)
  second = torch.nn.functional.pad(token_ids[:, 1:], (0, 1)).to(torch.int64)
  mixed = ((first * 2654435761) & _MASK32) ^ (((second + 0x7F4A7C15) * 2246822519) & _MASK32)
  return ((mixed ^ (mixed >> 15)) % buckets).to(torch.int64)


class MLPClassifier(nn.Module):
  """bigjax's MLPClassifier: embeddings (and hashed bigrams) -> masked mean -> MLP -> logits."""

  def __init__(self, vocab_size: int, num_classes: int, embed_dim: int, hidden_dim: int, num_layers: int,
               dropout: float, word_dropout: float, bigram_buckets: int, embed_init_std: float):
    super().__init__()
    self.word_dropout, self.bigram_buckets = word_dropout, bigram_buckets
    self.embedding = nn.Embedding(vocab_size, embed_dim)
    nn.init.normal_(self.embedding.weight, std=embed_init_std)
    self.bigram_embedding = None
    if bigram_buckets:
      self.bigram_embedding = nn.Embedding(bigram_buckets, embed_dim)
      nn.init.normal_(self.bigram_embedding.weight, std=embed_init_std)
    layers, width = [], embed_dim
    for _ in range(num_layers):
      layers += [nn.Dropout(dropout), nn.Linear(width, hidden_dim), nn.ReLU()]
      width = hidden_dim
    layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
    self.mlp = nn.Sequential(*layers)

  def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(token_ids.shape[1], device=token_ids.device)[None]
    mask = positions < lengths[:, None]
    x = self.embedding(token_ids)
    if self.bigram_embedding is not None:  # Slot T + t is the pair (t, t + 1); a row of n tokens has n - 1.
      x = torch.cat([x, self.bigram_embedding(bigram_ids(token_ids, self.bigram_buckets))], dim=1)
      mask = torch.cat([mask, positions < lengths[:, None] - 1], dim=1)
    if self.training and self.word_dropout:
      mask = mask & (torch.rand(mask.shape, device=mask.device) >= self.word_dropout)
    total = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype)).sum(dim=1)
    return self.mlp(total / mask.sum(dim=1, keepdim=True).clamp(min=1).to(total.dtype))


class SyntheticRows(torch.utils.data.Dataset):
  """n rows of random ids, each a function of (seed, index): what the Poisson loader samples from."""

  def __init__(self, n: int, vocab_size: int, width: int, num_classes: int, seed: int):
    self.n, self.vocab_size, self.width, self.num_classes, self.seed = n, vocab_size, width, num_classes, seed

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    rng = np.random.default_rng([self.seed, i])
    ids = torch.from_numpy(rng.integers(1, self.vocab_size, self.width).astype(np.int64))
    return ids, torch.tensor(self.width), torch.tensor(int(rng.integers(0, self.num_classes)))


def fixed_batch(batch_size: int, width: int, vocab_size: int, num_classes: int, seed: int):
  """The timed batch: full rows of ids in [1, V) and labels, drawn as benchmarks.dp_speed draws bigjax's."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab_size, (batch_size, width)).astype(np.int64)
  labels = rng.integers(0, num_classes, batch_size).astype(np.int64)
  return torch.from_numpy(ids), torch.full((batch_size,), width, dtype=torch.int64), torch.from_numpy(labels)


def make_private(model: nn.Module, *, lr: float, clip_norm: float, noise_multiplier: float, batch_size: int,
                 train_examples: int, width: int, vocab_size: int, num_classes: int, grad_sample_mode: str,
                 seed: int):
  """(engine, model, optimizer, criterion, loader): Opacus's DP-SGD around model and Adam, Poisson sampling."""
  from opacus import PrivacyEngine  # pylint: disable=import-outside-toplevel
  if grad_sample_mode not in GRAD_SAMPLE_MODES:
    raise ValueError(f'grad_sample_mode={grad_sample_mode!r}: one of {GRAD_SAMPLE_MODES}')
  # As many rows as whole batches: Opacus's rate is 1 / len(loader), its expected batch then batch_size.
  n = max(1, round(train_examples / batch_size)) * batch_size
  loader = torch.utils.data.DataLoader(SyntheticRows(n, vocab_size, width, num_classes, seed), batch_size=batch_size)
  optimizer = torch.optim.Adam(model.parameters(), lr=lr)
  criterion = nn.CrossEntropyLoss()
  with warnings.catch_warnings():  # "Secure RNG turned off": noise for a benchmark, not for release.
    warnings.simplefilter('ignore')
    engine = PrivacyEngine()
    made = engine.make_private(module=model, optimizer=optimizer, criterion=criterion, data_loader=loader,
                               noise_multiplier=noise_multiplier, max_grad_norm=clip_norm, poisson_sampling=True,
                               loss_reduction='mean', clipping='flat', grad_sample_mode=grad_sample_mode,
                               noise_generator=torch.Generator().manual_seed(seed))
  if grad_sample_mode == 'ghost':
    model, optimizer, criterion, loader = made  # criterion: DPLossFastGradientClipping (two backward passes).
  else:
    model, optimizer, loader = made
  return engine, model, optimizer, criterion, loader


def train_step(model, optimizer, criterion, ids, lengths, labels) -> float:
  optimizer.zero_grad(set_to_none=True)
  loss = criterion(model(ids, lengths), labels)
  loss.backward()
  optimizer.step()
  return float(loss.detach() if hasattr(loss, 'detach') else loss.item())


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--vocab_size', type=int, default=30522)
  parser.add_argument('--num_classes', type=int, default=2)
  parser.add_argument('--embed_dim', type=int, default=300)
  parser.add_argument('--hidden_dim', type=int, default=256)
  parser.add_argument('--num_layers', type=int, default=1)
  parser.add_argument('--dropout', type=float, default=0.5)
  parser.add_argument('--word_dropout', type=float, default=0.0)
  parser.add_argument('--bigram_buckets', type=int, default=0)
  parser.add_argument('--embed_init_std', type=float, default=1.0)
  parser.add_argument('--batch_size', type=int, default=256, help='Rows of the timed batch: the expected batch.')
  parser.add_argument('--width', type=int, default=64, help='Tokens per row (every one real).')
  parser.add_argument('--train_examples', type=int, default=6920, help='The synthetic dataset Poisson samples.')
  parser.add_argument('--clip_norm', type=float, default=1.0)
  parser.add_argument('--noise_multiplier', type=float, default=1.0)
  parser.add_argument('--lr', type=float, default=3e-3)
  parser.add_argument('--grad_sample_mode', choices=GRAD_SAMPLE_MODES, default='ghost')
  parser.add_argument('--steps', type=int, default=10, help='Timed steps.')
  parser.add_argument('--warmup_steps', type=int, default=3, help='Untimed first steps.')
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json_out', default='')
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  import opacus  # pylint: disable=import-outside-toplevel
  # Ghost mode's second backward pass fires the full backward hooks on outputs only (the ids need no
  # gradient), as Opacus intends; torch warns of it every step.
  warnings.filterwarnings('ignore', message='Full backward hook is firing')
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  model = MLPClassifier(args.vocab_size, args.num_classes, args.embed_dim, args.hidden_dim, args.num_layers,
                        args.dropout, args.word_dropout, args.bigram_buckets, args.embed_init_std)
  parameters = sum(p.numel() for p in model.parameters())
  engine, model, optimizer, criterion, loader = make_private(
      model, lr=args.lr, clip_norm=args.clip_norm, noise_multiplier=args.noise_multiplier,
      batch_size=args.batch_size, train_examples=args.train_examples, width=args.width,
      vocab_size=args.vocab_size, num_classes=args.num_classes, grad_sample_mode=args.grad_sample_mode,
      seed=args.seed)
  model.train()
  poisson_rows = len(next(iter(loader))[0])  # One Poisson draw: a Binomial(n, q) number of rows.
  ids, lengths, labels = fixed_batch(args.batch_size, args.width, args.vocab_size, args.num_classes, args.seed)
  times, losses = [], []
  for _ in range(args.warmup_steps + args.steps):
    start = time.perf_counter()
    losses.append(train_step(model, optimizer, criterion, ids, lengths, labels))  # CPU eager: done on return.
    times.append(time.perf_counter() - start)
  timed = times[args.warmup_steps:]
  step_s = statistics.median(timed)
  report = {'examples_per_s': args.batch_size / step_s, 'tokens_per_s': args.batch_size * args.width / step_s,
            'step_s': step_s, 'step_times_s': timed, 'examples_per_step': args.batch_size,
            'tokens_per_step': args.batch_size * args.width, 'parameters': parameters,
            'grad_sample_mode': args.grad_sample_mode, 'module': type(model).__name__,
            'optimizer': type(optimizer).__name__, 'sample_rate': 1 / len(loader),
            'expected_batch': optimizer.expected_batch_size, 'poisson_batch_rows': poisson_rows,
            'accountant_steps': sum(steps for _, _, steps in engine.accountant.history),
            'first_loss': losses[0], 'last_loss': losses[-1], 'threads': torch.get_num_threads(),
            'torch': torch.__version__, 'opacus': opacus.__version__}
  print(json.dumps(report))
  if args.json_out:
    with open(args.json_out, 'w', encoding='utf-8') as f:
      json.dump(report, f)
  return report


if __name__ == '__main__':
  main()
