"""Hugging Face `transformers`' BERT classifier trained in PyTorch: the peer of bigjax's Transformer step.

Runs under any Python with torch, transformers and numpy (no bigjax); benchmarks.transformer_speed
runs it in a subprocess of its own, so torch and JAX never share a process. The model is
BertForSequenceClassification built from a BertConfig of bigjax's `transformer` sizes: post-LN,
exact GELU ("gelu"), LayerNorm epsilon 1e-12, two token types, BERT's pooler, dropout on the hidden
states and on the attention weights, and `transformers`' default attention implementation (sdpa).
The step is what bigjax's trainer does in one step of transformer_sst2.py's recipe: forward,
mean cross-entropy, backward, global-norm clipping, AdamW (weight decay 0.01; fused, as
transformers' Trainer runs it by default) with a linear warmup then decay.

Every row is full (--seq_len real tokens, an all-ones attention mask), so a step trains on
batch x seq_len tokens, as bigjax's side of the race does. The token ids come from numpy's
generator with --seed, as on bigjax's side. Reports the median step time over the steps after
--warmup_steps; the last line printed is one JSON object.

  python benchmarks/torch_peer_transformer.py --hidden=256 --layers=4 --heads=4 --intermediate=1024 \
      --vocab_size=14833 --batch_size=32 --seq_len=128 --steps=10 --json_out=peer.json
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
import transformers


ADAMW_IMPLEMENTATIONS = {'fused': {'fused': True}, 'foreach': {'foreach': True}, 'for_loop': {'foreach': False}}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--hidden', type=int, default=256, help='hidden_size (bigjax: model.embed_dim).')
  parser.add_argument('--layers', type=int, default=4)
  parser.add_argument('--heads', type=int, default=4)
  parser.add_argument('--intermediate', type=int, default=1024)
  parser.add_argument('--vocab_size', type=int, default=14833)
  parser.add_argument('--max_positions', type=int, default=128)
  parser.add_argument('--num_labels', type=int, default=2)
  parser.add_argument('--dropout', type=float, default=0.1, help='Hidden and attention-weight dropout.')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--lr', type=float, default=5e-4)
  parser.add_argument('--weight_decay', type=float, default=0.01)
  parser.add_argument('--clip_norm', type=float, default=1.0)
  # fused: what transformers' Trainer runs by default with torch >= 2.8 (optim='adamw_torch_fused');
  # for_loop is torch.optim.AdamW's own default on CPU tensors.
  parser.add_argument('--adamw', choices=ADAMW_IMPLEMENTATIONS, default='fused',
                      help='torch.optim.AdamW implementation.')
  parser.add_argument('--steps', type=int, default=10, help='Timed steps.')
  parser.add_argument('--warmup_steps', type=int, default=3, help='Untimed first steps.')
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json_out', default='')
  return parser.parse_args()


def build_model(args) -> transformers.BertForSequenceClassification:
  config = transformers.BertConfig(
      vocab_size=args.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
      num_attention_heads=args.heads, intermediate_size=args.intermediate, max_position_embeddings=args.max_positions,
      type_vocab_size=2, hidden_act='gelu', layer_norm_eps=1e-12, hidden_dropout_prob=args.dropout,
      attention_probs_dropout_prob=args.dropout, num_labels=args.num_labels)
  return transformers.BertForSequenceClassification(config)


def linear_schedule(warmup: int, total: int):
  """bigjax's optim 'linear': a rise from 0 over `warmup` steps, then a fall to 0 at `total`."""
  return lambda step: step / warmup if step < warmup else max(0.0, (total - step) / max(total - warmup, 1))


def main():
  args = parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  model = build_model(args)
  model.train()
  total_steps = args.warmup_steps + args.steps
  optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=args.weight_decay, **ADAMW_IMPLEMENTATIONS[args.adamw])
  # A tenth of the run warms up, as in transformer_sst2.py (at least one step: no 0/0).
  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(max(total_steps // 10, 1), total_steps))
  rng = np.random.default_rng(args.seed)
  ids = torch.from_numpy(rng.integers(1, args.vocab_size, (args.batch_size, args.seq_len)).astype(np.int64))
  labels = torch.from_numpy(rng.integers(0, args.num_labels, args.batch_size).astype(np.int64))
  mask = torch.ones_like(ids)  # Every row full: batch x seq_len real tokens.
  types = torch.zeros_like(ids)
  times, losses = [], []
  for _ in range(total_steps):
    start = time.perf_counter()
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
    optimizer.step()
    scheduler.step()
    losses.append(float(out.loss.detach()))  # (CPU eager: the step is done already.)
    times.append(time.perf_counter() - start)
  timed = times[args.warmup_steps:]
  step_s = statistics.median(timed)
  tokens = int(mask.sum())
  report = {'tokens_per_s': tokens / step_s, 'step_s': step_s, 'step_times_s': timed, 'tokens_per_step': tokens,
            'examples_per_step': args.batch_size, 'parameters': sum(p.numel() for p in model.parameters()),
            'attention': model.config._attn_implementation,  # pylint: disable=protected-access
            'adamw': args.adamw,
            'first_loss': losses[0], 'last_loss': losses[-1], 'threads': torch.get_num_threads(),
            'torch': torch.__version__, 'transformers': transformers.__version__}
  print(json.dumps(report))
  if args.json_out:
    with open(args.json_out, 'w', encoding='utf-8') as f:
      json.dump(report, f)


if __name__ == '__main__':
  main()
