"""A pretrained Hugging Face BERT-family folder finetuned on SST-2 in PyTorch: the peer of bigjax finetuning it.

Two modes, one model: `transformers.AutoModelForSequenceClassification.from_pretrained(--model_dir,
num_labels=2)` (for all-MiniLM-L6-v2, BertForSequenceClassification: the pretrained encoder and
pooler, a new classifier drawn with torch's seed) with `transformers`' default attention (sdpa),
trained in a plain PyTorch loop (no Trainer):

- Finetuning (the default): SST-2's train/dev/test.txt read by bigjax's own source reader with
  data.text_form='ptb' (bigjax.data.sources.load_text_dataset, which imports numpy and no JAX),
  so both sides see the same plain texts (`do n't` -> `don't`, `-lrb-` -> `(`, ...); then
  AutoTokenizer.from_pretrained(--model_dir) with its special tokens ([CLS] ... [SEP]),
  truncated to --max_len. Batching (--batching): 'random', a fresh shuffle each epoch, each batch
  padded to its longest row (what transformers' Trainer does without group_by_length); or
  'length_pools', bigjax's order (bigjax/data/batching.py epoch_order: pools of 50 batches sorted
  by length, then the batches shuffled), still padded to the batch's longest row, not to
  bigjax's bucket widths. The recipe is BERT's finetuning one: mean cross-entropy, dropout as the
  model's config has it (hidden and attention 0.1 for MiniLM; the classifier's is the hidden one),
  global-norm clipping at --clip_norm, AdamW (betas 0.9/0.999, eps 1e-8; --adamw 'fused' by
  default, as transformers' Trainer runs it with torch >= 2.8) with weight decay on every weight
  but the biases and the LayerNorms' parameters (as BERT and Trainer exclude them; bigjax's
  optim.no_decay='bias|norm'), a linear warmup over --warmup_fraction of the steps then a linear
  decay to 0 at the last step (bigjax's optim.schedule='linear'). Dev is evaluated after each
  epoch; the best dev epoch's weights are kept (the first of equals) and test is evaluated once,
  with them. train_seconds counts the training steps only (no evaluation, loading or
  tokenizing); tokens_per_second is the real tokens trained on ([CLS] and [SEP] included,
  padding not) over it.
- Speed (--speed_shapes=16x256,8x512): for each BATCHxLEN shape, the same model loaded afresh and
  trained --speed_steps steps after --speed_warmup_steps untimed ones on one batch of full rows
  (an all-ones attention mask) of random token ids, drawn as benchmarks.step_race.race_batch draws
  bigjax's (numpy's generator with --seed: ids in [1, vocab), then labels); the recipe as above,
  the schedule over those steps. Reports each shape's median step time and tokens/s.
  benchmarks.finetune_speed runs this mode in a subprocess, against bigjax's step.

Runs from the checkout's root under a Python with torch, transformers, numpy and absl (bigjax's
[peers] extra: `pip install -e ".[peers]"`); torch.set_num_threads(--threads). The last line
printed is one JSON object (also written to --json_out). The commands (2 CPU cores, an idle
machine; --limit and --eval_limit are for smoke tests only):

  python -m benchmarks.torch_peer_finetune --model_dir=../shared/models/all-MiniLM-L6-v2 \\
      --data_dir=../shared/data/sst2 --epochs=3 --batch_size=32 --learning_rate=5e-5 --max_len=64 \\
      --warmup_fraction=0.1 --seed=0 --threads=2 --json_out=runs/torch_peer_finetune_seed0.json
  python -m benchmarks.torch_peer_finetune --model_dir=../shared/models/all-MiniLM-L6-v2 \\
      --speed_shapes=16x256,8x512 --speed_steps=5 --speed_warmup_steps=2 --threads=2
  python -m benchmarks.torch_peer_finetune --limit=64 --eval_limit=64 --epochs=1 --batch_size=16  # smoke
"""
import copy
import json
import math
import os
import statistics
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import torch
import transformers

from bigjax.data import sources  # Pure Python and numpy: no JAX in this process.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, '..', 'shared'))
NUM_LABELS = 2
ADAMW_IMPLEMENTATIONS = {'fused': {'fused': True}, 'foreach': {'foreach': True}, 'for_loop': {'foreach': False}}
BATCHINGS = ('random', 'length_pools')
POOL_BATCHES = 50  # bigjax/data/batching.py's pools.

_MODEL_DIR = flags.DEFINE_string('model_dir', os.path.join(SHARED, 'models', 'all-MiniLM-L6-v2'),
                                 'A Hugging Face model folder (config.json, weights, tokenizer).')
_DATA_DIR = flags.DEFINE_string('data_dir', os.path.join(SHARED, 'data', 'sst2'), "SST-2's train/dev/test.txt.")
_MAX_LEN = flags.DEFINE_integer('max_len', 64, 'Tokens per text at most, [CLS] and [SEP] included.', lower_bound=3)
_EPOCHS = flags.DEFINE_integer('epochs', 3, 'Training epochs.', lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Training rows per step.', lower_bound=1)
_EVAL_BATCH_SIZE = flags.DEFINE_integer('eval_batch_size', 128, 'Rows per evaluation batch.', lower_bound=1)
_BATCHING = flags.DEFINE_enum('batching', 'random', BATCHINGS, "random: a shuffle each epoch; length_pools: "
                              "bigjax's (pools of 50 batches sorted by length, batches shuffled). Both pad each "
                              "batch to its longest row.")
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 5e-5, 'Peak learning rate.')
_WEIGHT_DECAY = flags.DEFINE_float('weight_decay', 0.01, "AdamW's, on every weight but biases and LayerNorms.")
_WARMUP_FRACTION = flags.DEFINE_float('warmup_fraction', 0.1, 'Share of the steps the learning rate rises over.',
                                      lower_bound=0.0, upper_bound=1.0)
_CLIP_NORM = flags.DEFINE_float('clip_norm', 1.0, 'Global gradient norm clip; 0: none.', lower_bound=0.0)
_ADAMW = flags.DEFINE_enum('adamw', 'fused', list(ADAMW_IMPLEMENTATIONS), 'torch.optim.AdamW implementation.')
_LIMIT = flags.DEFINE_integer('limit', 0, 'Train on the first N training examples only (smoke tests); 0: all.',
                              lower_bound=0)
_EVAL_LIMIT = flags.DEFINE_integer('eval_limit', 0, 'Evaluate on the first N dev and test examples only (smoke '
                                   'tests); 0: all.', lower_bound=0)
_SPEED_SHAPES = flags.DEFINE_list('speed_shapes', [], 'BATCHxLEN shapes (e.g. 16x256,8x512): the speed mode '
                                  'instead of finetuning.')
_SPEED_STEPS = flags.DEFINE_integer('speed_steps', 5, 'Timed steps per shape.', lower_bound=1)
_SPEED_WARMUP_STEPS = flags.DEFINE_integer('speed_warmup_steps', 2, 'Untimed steps before them.', lower_bound=0)
_THREADS = flags.DEFINE_integer('threads', 2, 'torch.set_num_threads.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, "torch's seed (the new classifier, dropout) and the batches'.")
_EVAL_EVERY = flags.DEFINE_integer('eval_every_steps', 0, 'Evaluate dev every N steps, and at the end (as '
                                  "bigjax's checkpoint.every_steps); 0: after each epoch.", lower_bound=0)
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also write the report here.')


def load_model(model_dir: str) -> torch.nn.Module:
  """The pretrained encoder with a new classifier (drawn from torch's generator: seed it first)."""
  return transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=NUM_LABELS,
                                                                         dtype=torch.float32)


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
  """AdamW's parameter groups: no weight decay on biases and LayerNorm parameters, as BERT's recipe."""
  exempt = set()
  for module_name, module in model.named_modules():
    for name, _ in module.named_parameters(recurse=False):
      if isinstance(module, torch.nn.LayerNorm) or name == 'bias':
        exempt.add(f'{module_name}.{name}' if module_name else name)
  decayed = [p for n, p in model.named_parameters() if n not in exempt]
  undecayed = [p for n, p in model.named_parameters() if n in exempt]
  return [{'params': decayed, 'weight_decay': weight_decay}, {'params': undecayed, 'weight_decay': 0.0}]


def linear_schedule(warmup: int, total: int):
  """bigjax's optim 'linear': a rise from 0 over `warmup` steps, then a fall to 0 at `total`."""
  def factor(step: int) -> float:
    if step < warmup:
      return step / warmup
    return max(0.0, (total - step) / max(total - warmup, 1))
  return factor


class Trainer:
  """The model, its optimizer and schedule, and one training step (forward, backward, clip, AdamW)."""

  def __init__(self, model_dir: str, *, learning_rate: float, weight_decay: float, clip_norm: float, adamw: str,
               total_steps: int, warmup_steps: int, seed: int):
    torch.manual_seed(seed)
    self.model = load_model(model_dir)
    self.model.train()  # Dropout as the model's config has it.
    self.optimizer = torch.optim.AdamW(decay_groups(self.model, weight_decay), lr=learning_rate, betas=(0.9, 0.999),
                                       eps=1e-8, **ADAMW_IMPLEMENTATIONS[adamw])
    self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_schedule(warmup_steps, total_steps))
    self.clip_norm = clip_norm
    self.parameters = sum(p.numel() for p in self.model.parameters())

  def step(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> float:
    out = self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), labels=labels)
    self.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if self.clip_norm:
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
    self.optimizer.step()
    self.scheduler.step()
    return float(out.loss.detach())  # (CPU eager: the step is done already.)


def read_sst2(data_dir: str, limit: int, eval_limit: int) -> dict:
  """split -> (texts, labels): bigjax's reading of the files, Penn Treebank tokens joined back into plain text."""
  dataset = sources.load_text_dataset(path=data_dir, text_form='ptb')
  if dataset.num_classes != NUM_LABELS:
    raise app.UsageError(f'{data_dir}: {dataset.num_classes} classes, not {NUM_LABELS}')
  splits = {}
  for name in ('train', 'dev', 'test'):
    split = dataset.splits[name]
    n = (limit if name == 'train' else eval_limit) or len(split.texts)
    splits[name] = (list(split.texts[:n]), np.asarray(split.labels[:n], np.int64))
  return splits


def encode(tokenizer, texts: list[str], max_len: int) -> tuple[list[list[int]], int]:
  """Token ids with the special tokens, cut to max_len; and how many texts were cut."""
  full = tokenizer(texts, add_special_tokens=True)['input_ids']
  rows = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_len)['input_ids']
  return rows, sum(len(f) > max_len for f in full)


def pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
  """Rows padded to the longest of them: ids and the attention mask, int64[B, T]."""
  width = max(len(r) for r in rows)
  ids = np.full((len(rows), width), pad_id, np.int64)
  mask = np.zeros((len(rows), width), np.int64)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = 1
  return torch.from_numpy(ids), torch.from_numpy(mask)


def epoch_batches(lengths: np.ndarray, batch_size: int, batching: str, rng: np.random.Generator) -> list[np.ndarray]:
  """Row indices of each batch of one epoch; the last batch may be short (kept, as bigjax keeps it)."""
  perm = rng.permutation(len(lengths))
  if batching == 'random':
    return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
  pool, batches = batch_size * POOL_BATCHES, []
  for start in range(0, len(perm), pool):
    chunk = perm[start:start + pool]
    chunk = chunk[np.argsort(lengths[chunk], kind='stable')]
    batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
  return [batches[i] for i in rng.permutation(len(batches))]


def accuracy(model: torch.nn.Module, rows: list[list[int]], labels: np.ndarray, batch_size: int, pad_id: int) -> float:
  """Share of rows classified right (dropout off); rows go in length order, so batches pad little."""
  model.eval()
  order = np.argsort([len(r) for r in rows], kind='stable')
  right = 0
  with torch.inference_mode():
    for start in range(0, len(order), batch_size):
      chosen = order[start:start + batch_size]
      ids, mask = pad([rows[i] for i in chosen], pad_id)
      logits = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).logits
      right += int((logits.argmax(-1).numpy() == labels[chosen]).sum())
  model.train()
  return right / max(len(rows), 1)


def finetune() -> dict:
  """Trains on train, keeps the best dev epoch, evaluates test with it."""
  splits = read_sst2(_DATA_DIR.value, _LIMIT.value, _EVAL_LIMIT.value)
  tokenizer = transformers.AutoTokenizer.from_pretrained(_MODEL_DIR.value)
  encoded, truncated = {}, {}
  for name, (texts, _) in splits.items():
    encoded[name], truncated[name] = encode(tokenizer, texts, _MAX_LEN.value)
  train_rows, train_labels = encoded['train'], splits['train'][1]
  steps_per_epoch = math.ceil(len(train_rows) / _BATCH_SIZE.value)
  total_steps = _EPOCHS.value * steps_per_epoch
  warmup_steps = int(round(_WARMUP_FRACTION.value * total_steps))
  trainer = Trainer(_MODEL_DIR.value, learning_rate=_LEARNING_RATE.value, weight_decay=_WEIGHT_DECAY.value,
                    clip_norm=_CLIP_NORM.value, adamw=_ADAMW.value, total_steps=total_steps,
                    warmup_steps=warmup_steps, seed=_SEED.value)
  model, pad_id = trainer.model, tokenizer.pad_token_id
  lengths = np.array([len(r) for r in train_rows])
  rng = np.random.default_rng(_SEED.value)
  epochs, best, best_state = [], None, None
  train_seconds, train_tokens, padded_tokens, step = 0.0, 0, 0, 0
  every = _EVAL_EVERY.value

  def evaluate_dev(epoch, losses, seconds):
    nonlocal best, best_state
    dev = accuracy(model, encoded['dev'], splits['dev'][1], _EVAL_BATCH_SIZE.value, pad_id)
    epochs.append({'epoch': epoch, 'step': step, 'dev_accuracy': dev, 'train_loss': statistics.fmean(losses),
                   'train_seconds': seconds})
    print(f'epoch {epoch} step {step}: train loss {epochs[-1]["train_loss"]:.4f}, dev {dev:.4f}, {seconds:.1f} s',
          flush=True)
    if best is None or dev > best['dev_accuracy']:
      best = epochs[-1]
      best_state = copy.deepcopy(model.state_dict())

  for epoch in range(1, _EPOCHS.value + 1):
    losses, epoch_seconds = [], 0.0
    for indices in epoch_batches(lengths, _BATCH_SIZE.value, _BATCHING.value, rng):
      ids, mask = pad([train_rows[i] for i in indices], pad_id)
      labels = torch.from_numpy(train_labels[indices])
      start = time.perf_counter()
      losses.append(trainer.step(ids, mask, labels))
      epoch_seconds += time.perf_counter() - start
      train_tokens += int(mask.sum())
      padded_tokens += mask.numel()
      step += 1
      if every and (step % every == 0 or step == total_steps):
        evaluate_dev(epoch, losses, epoch_seconds)
    train_seconds += epoch_seconds
    if not every:
      evaluate_dev(epoch, losses, epoch_seconds)
  model.load_state_dict(best_state)
  test = accuracy(model, encoded['test'], splits['test'][1], _EVAL_BATCH_SIZE.value, pad_id)
  config = model.config
  return {
      'test_accuracy': test, 'dev_accuracy': best['dev_accuracy'], 'best_epoch': best['epoch'], 'best_step': best['step'],
      'train_seconds': train_seconds, 'tokens_per_second': train_tokens / train_seconds, 'train_tokens': train_tokens,
      'padded_tokens': padded_tokens, 'epochs_run': epochs,
      'recipe': {
          'model_dir': _MODEL_DIR.value, 'data_dir': _DATA_DIR.value, 'text_form': 'ptb', 'max_len': _MAX_LEN.value,
          'special_tokens': True, 'epochs': _EPOCHS.value, 'batch_size': _BATCH_SIZE.value,
          'batching': _BATCHING.value, 'padding': "each batch to its longest row",
          'learning_rate': _LEARNING_RATE.value, 'weight_decay': _WEIGHT_DECAY.value,
          'no_decay': 'biases and LayerNorm parameters', 'warmup_fraction': _WARMUP_FRACTION.value,
          'warmup_steps': warmup_steps, 'total_steps': total_steps, 'schedule': 'linear', 'clip_norm': _CLIP_NORM.value,
          'optimizer': 'adamw', 'adamw': _ADAMW.value, 'dropout': config.hidden_dropout_prob,
          'attention_dropout': config.attention_probs_dropout_prob, 'seed': _SEED.value, 'limit': _LIMIT.value,
          'eval_limit': _EVAL_LIMIT.value, 'eval_every_steps': every},
      'examples': {name: len(rows) for name, rows in encoded.items()}, 'truncated': truncated,
      'parameters': trainer.parameters, 'model_class': type(model).__name__,
      'attention': config._attn_implementation,  # pylint: disable=protected-access
      **runtime(),
  }


def parse_shape(text: str) -> tuple[int, int]:
  """'16x256' -> (16, 256)."""
  try:
    batch, length = (int(x) for x in text.lower().split('x'))
  except ValueError:
    raise app.UsageError(f'--speed_shapes: {text!r} is not BATCHxLEN (e.g. 16x256)') from None
  if batch < 1 or length < 1:
    raise app.UsageError(f'--speed_shapes: {text!r} has an empty side')
  return batch, length


def speed(shapes: list[tuple[int, int]]) -> dict:
  """Each shape's median step time on full rows of random ids, a fresh model and optimizer for each."""
  config = transformers.AutoConfig.from_pretrained(_MODEL_DIR.value)
  too_long = [f'{b}x{t}' for b, t in shapes if t > config.max_position_embeddings]
  if too_long:
    raise app.UsageError(f'--speed_shapes {",".join(too_long)}: longer than the model\'s '
                         f'{config.max_position_embeddings} positions')
  total_steps = _SPEED_WARMUP_STEPS.value + _SPEED_STEPS.value
  report, attention = {}, None
  for batch_size, seq_len in shapes:
    trainer = Trainer(_MODEL_DIR.value, learning_rate=_LEARNING_RATE.value, weight_decay=_WEIGHT_DECAY.value,
                      clip_norm=_CLIP_NORM.value, adamw=_ADAMW.value, total_steps=total_steps,
                      warmup_steps=max(int(round(_WARMUP_FRACTION.value * total_steps)), 1), seed=_SEED.value)
    rng = np.random.default_rng(_SEED.value)  # As benchmarks.step_race.race_batch draws bigjax's batch.
    ids = torch.from_numpy(rng.integers(1, config.vocab_size, (batch_size, seq_len)).astype(np.int64))
    labels = torch.from_numpy(rng.integers(0, NUM_LABELS, batch_size).astype(np.int64))
    mask = torch.ones_like(ids)  # Every row full: batch x seq_len real tokens.
    times, losses = [], []
    for _ in range(total_steps):
      start = time.perf_counter()
      losses.append(trainer.step(ids, mask, labels))
      times.append(time.perf_counter() - start)
    timed = times[_SPEED_WARMUP_STEPS.value:]
    step_s = statistics.median(timed)
    tokens = int(mask.sum())
    report[f'{batch_size}x{seq_len}'] = {
        'tokens_per_s': tokens / step_s, 'step_s': step_s, 'step_times_s': timed, 'tokens_per_step': tokens,
        'examples_per_step': batch_size, 'parameters': trainer.parameters, 'first_loss': losses[0],
        'last_loss': losses[-1]}
    print(f'{batch_size}x{seq_len}: {tokens / step_s:.0f} tokens/s ({1000 * step_s:.0f} ms a step)', flush=True)
    attention = trainer.model.config._attn_implementation  # pylint: disable=protected-access
    del trainer
  return {'shapes': report, 'parameters': next(iter(report.values()))['parameters'],
          'model_dir': _MODEL_DIR.value, 'steps': _SPEED_STEPS.value, 'warmup_steps': _SPEED_WARMUP_STEPS.value,
          'learning_rate': _LEARNING_RATE.value, 'weight_decay': _WEIGHT_DECAY.value, 'clip_norm': _CLIP_NORM.value,
          'adamw': _ADAMW.value, 'attention': attention, 'seed': _SEED.value, **runtime()}


def runtime() -> dict:
  return {'threads': torch.get_num_threads(), 'torch': torch.__version__, 'transformers': transformers.__version__}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  torch.set_num_threads(_THREADS.value)
  if _SPEED_SHAPES.value:
    report = speed([parse_shape(s) for s in _SPEED_SHAPES.value])
  else:
    report = finetune()
  print(json.dumps(report))
  if _JSON_OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON_OUT.value)), exist_ok=True)
    with open(_JSON_OUT.value, 'w', encoding='utf-8') as f:
      json.dump(report, f)


if __name__ == '__main__':
  app.run(main)
