"""DP-SGD's gradient (Abadi et al. 2016): each example's gradient clipped to norm C, summed,
Gaussian noise of standard deviation sigma * C added, divided by the expected batch size.

The step (bigjax.train.step) asks `PrivateGradients` for the clipped sum of its rows and, after
summing over devices, for the noisy mean. Per-example gradients are a vmap of the task's loss
over single rows (each row its own dropout key), formed k rows at a time for
train.accum_steps = k micro-batches, which bounds their memory.

Two kinds of layers take a shortcut where the model allows it ("ghost" norms, as in Li et al.
2021), so that their per-example gradients are never formed:
- Embedding tables: an example's gradient of a table is its embedding slots' gradients added
  into the rows they read, so its squared norm is the sum, over the rows read, of |the sum of the
  slot gradients reading that row|^2, from the [S, E] slot gradients (table_squared_norms); the
  clipped sum of the tables is one backward pass of the lookup. It needs the model's embed /
  logits_from_embeddings split, its embedding_rows, and tables that only `embed` reads.
- Dense layers (bigjax.privacy.dense_norms): norms and clipped sums from each layer's inputs and
  output gradients.
Every other parameter's per-example gradient is formed. All ways give the same clipped sums
(tests/test_privacy.py). Frozen parameters (`frozen`) are left out of all of them: a partly
frozen model pays only for the layers it trains.
"""
import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from bigjax import draws
from bigjax.privacy import dense_norms
from bigjax.types import Batch, ModelFns

# Keeps the noise's random stream apart from the dropout keys of the same step.
_NOISE_STREAM = 0x4E01


def _one_row(row):
  """A row of a batch as a batch of one row."""
  return jax.tree.map(lambda x: x[None], row)


def _squared_norms(per_example) -> jax.Array:
  """float32[B]: each example's squared gradient norm over the leaves of [B, ...] arrays."""
  return sum(jnp.sum(jnp.square(g.reshape(g.shape[0], -1).astype(jnp.float32)), axis=1)
             for g in jax.tree.leaves(per_example))


def _weighted_sum(factors, per_example):
  return jax.tree.map(lambda g: jnp.tensordot(factors.astype(g.dtype), g, axes=1), per_example)


# Up to this many slots a row, the slots reading the same table row are found by comparing all
# pairs; beyond, by sorting. On the 2-core CPU at 1,157 rows: 4.0 ms against 9.8 ms at 64 slots,
# 156 ms against 110 ms at 512 (docs/results/privacy.md, "Speed").
PAIRWISE_SLOTS = 128


def table_squared_norms(rows, slot_grads):
  """float32[B]: |G_i|^2 of each example's table gradient G_i, whose row v is the sum of its slot
  gradients slot_grads[i, s] with rows[i, s] == v. O(B S E) work and memory beyond finding the
  repeated rows, never a [V, E] table an example."""
  batch, slots, width = slot_grads.shape
  if slots <= PAIRWISE_SLOTS:
    # Each slot's gradient added into the first slot that reads the same row.
    first = jnp.argmax(rows[:, :, None] == rows[:, None, :], axis=-1)
    index = (first + slots * jnp.arange(batch)[:, None]).reshape(-1)
    summed = jnp.zeros((batch * slots, width), slot_grads.dtype).at[index].add(slot_grads.reshape(-1, width))
    return jnp.sum(jnp.square(summed).reshape(batch, -1), axis=1)
  return jax.vmap(_sorted_squared_norm)(rows, slot_grads)


def _sorted_squared_norm(rows, slot_grads):
  """table_squared_norms of one example: the slots sorted by row, each run of equal rows summed."""
  order = jnp.argsort(rows)
  sorted_rows = rows[order]
  run = jnp.cumsum(jnp.concatenate([jnp.zeros(1, jnp.int32), (sorted_rows[1:] != sorted_rows[:-1]).astype(jnp.int32)]))
  per_row = jax.ops.segment_sum(slot_grads[order], run, num_segments=rows.shape[0])
  return jnp.sum(jnp.square(per_row))


@dataclasses.dataclass(frozen=True)
class PrivateGradients:
  """How a step's gradient is made private. task: its loss(model, params, batch, key) weights rows."""
  task: Any
  model: ModelFns
  clip_norm: float  # C
  noise_multiplier: float  # sigma
  expected_batch: float  # n * q: what the noisy sum is divided by
  ghost: bool = True  # Tables' and dense layers' norms without their per-example gradients, where possible.
  # params -> a tree of bools, True on the leaves that never train (optim.param_groups' REGEX=freeze,
  # bigjax.train.optim.frozen_mask): they get no per-example gradient, no share of the clip and no
  # noise, so finetuning a few layers of a large model costs their backward pass only. None: all train.
  frozen: Optional[Callable] = None

  def _row_loss(self, model: ModelFns, params, row: Batch, key):
    return self.task.loss(model, params, _one_row(row), key)

  def _tables(self, params, token_ids) -> Optional[list[int]]:
    """The leaves the ghost norms serve (those `embed` reads), or None where they cannot."""
    m = self.model
    if not self.ghost or m.embed is None or m.logits_from_embeddings is None or m.embedding_rows is None:
      return None
    tables = dense_norms.leaves_read(m.embed, params, token_ids)
    embedded = jax.eval_shape(m.embed, params, token_ids)
    lengths = jnp.zeros(token_ids.shape[:1], jnp.int32)
    rest = dense_norms.leaves_read(lambda p, e: m.logits_from_embeddings(p, e, lengths), params, embedded)
    return sorted(tables) if tables and not tables & rest else None  # Tied tables: every gradient formed.

  def _frozen(self, params) -> set[int]:
    """Indices (in jax.tree.leaves order) of the leaves that never train."""
    if self.frozen is None:
      return set()
    return {i for i, frozen in enumerate(jax.tree.leaves(self.frozen(params))) if frozen}

  def _dense_calls(self, params, batch: Batch, keys, skip: set[int]) -> list[dense_norms.DenseCall]:
    """The dense layers whose norms come from their inputs and output gradients (dense_norms)."""
    if not self.ghost:
      return []
    row, key = jax.tree.map(lambda x: x[0], batch), keys[0]
    return dense_norms.find(lambda p: self._row_loss(self.model, p, row, key)[0], params, skip)

  def per_example(self, params, batch: Batch, keys):
    """(clipped-sum parts) for one micro-batch: the per-example gradients' squared norms, and a
    function factors[B] -> sum_i factors_i * gradient_i, with the loss sums.

    Three kinds of trained leaves: embedding tables (their slots' gradients, table_squared_norms),
    dense layers (their inputs and output gradients, dense_norms), and the rest (per-example
    gradients formed by vmap). One vmapped backward pass of each row's loss gives all three."""
    leaves, treedef = jax.tree.flatten(params)
    frozen = self._frozen(params)
    tables = [i for i in self._tables(params, batch.token_ids) or () if i not in frozen]
    calls = self._dense_calls(params, batch, keys, frozen | set(tables))
    dense = {i for c in calls for i in (c.kernel, c.bias) if i is not None}
    rest = [i for i in range(len(leaves)) if i not in frozen and i not in tables and i not in dense]
    table_leaves, rest_leaves = [leaves[i] for i in tables], [leaves[i] for i in rest]

    def join(parts: dict, fill):
      """A params-shaped tree: parts[i] at leaf i, fill(leaf) elsewhere."""
      return jax.tree.unflatten(treedef, [parts[i] if i in parts else fill(x) for i, x in enumerate(leaves)])

    with_params = lambda table_part, rest_part: join(dict(zip(tables, table_part)) | dict(zip(rest, rest_part)),
                                                     lambda x: x)

    def row_grads(row, embedded_row, key):
      """(the rest's gradients, the table slots' gradients, the dense layers' inputs and output
      gradients, the loss sums) of one row."""
      def loss(rest_part, embedded, perturbations):
        model = self.model
        if tables:
          model = model._replace(
              logits=lambda p, ids, lengths, k=None: self.model.logits_from_embeddings(p, embedded, lengths, k))
        with dense_norms.perturbed(calls, perturbations) as inputs:
          value, sums = self._row_loss(model, with_params(table_leaves, rest_part), row, key)
        missing = [c.path for c, x in zip(calls, inputs) if x is None]
        if missing:
          raise RuntimeError(f'dense layers {missing} ran when found but not in the per-example pass')
        return value, (sums, list(inputs))
      zeros = [jnp.zeros(c.output.shape, c.output.dtype) for c in calls]
      embedded = embedded_row[None] if tables else None
      (rest_grad, slot_grad, outputs_grad), (sums, inputs) = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(
          rest_leaves, embedded, zeros)
      return rest_grad, None if slot_grad is None else slot_grad[0], inputs, outputs_grad, sums

    if tables:
      embed_tables = lambda table_part: self.model.embed(with_params(table_part, rest_leaves), batch.token_ids)
      embedded, embed_vjp = jax.vjp(embed_tables, table_leaves)
    else:
      embedded = None
    rest_grads, slot_grads, inputs, outputs_grads, sums = jax.vmap(row_grads, in_axes=(0, 0 if tables else None, 0))(
        batch, embedded, keys)
    squared = _squared_norms(rest_grads) + sum(
        dense_norms.squared_norms(c, x, g) for c, x, g in zip(calls, inputs, outputs_grads))
    if tables:
      slot_grads32 = slot_grads.astype(jnp.float32)
      squared = squared + table_squared_norms(self.model.embedding_rows(params, batch.token_ids), slot_grads32)

    def weighted_sum(factors):
      parts = dict(zip(rest, _weighted_sum(factors, rest_grads)))
      if tables:
        (table_part,) = embed_vjp((factors[:, None, None] * slot_grads32).astype(slot_grads.dtype))
        parts |= dict(zip(tables, table_part))
      for c, x, g in zip(calls, inputs, outputs_grads):
        kernel, bias = dense_norms.weighted_sums(c, factors, x, g, leaves[c.kernel],
                                                 None if c.bias is None else leaves[c.bias])
        parts[c.kernel] = kernel
        if c.bias is not None:
          parts[c.bias] = bias
      return join(parts, jnp.zeros_like)  # A frozen leaf's gradient is zero: no norm, no noise.

    return squared, weighted_sum, sums

  def clipped_sum(self, params, batch: Batch, dropout_key, accum_steps: int = 1, first_row=0):
    """(sum over real rows of each row's gradient clipped to clip_norm, the loss sums with
    'clipped': how many rows were clipped). Row r's dropout key is fold_in(dropout_key,
    first_row + r); micro-batch j takes rows j, j + k, ... (as bigjax.train.step's)."""
    rows = batch.weights.shape[0]
    keys = jax.vmap(lambda r: jax.random.fold_in(dropout_key, r))(first_row + jnp.arange(rows))

    def micro(micro_batch, micro_keys):
      squared, weighted_sum, sums = self.per_example(params, micro_batch, micro_keys)
      norms = jnp.sqrt(squared)
      factors = micro_batch.weights * jnp.minimum(1.0, self.clip_norm / jnp.maximum(norms, 1e-12))
      sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), sums)
      sums['clipped'] = jnp.sum((norms > self.clip_norm) * micro_batch.weights)
      return weighted_sum(factors), sums

    if accum_steps == 1:
      return micro(batch, keys)
    split = lambda x: jnp.moveaxis(x.reshape((-1, accum_steps) + x.shape[1:]), 1, 0)
    stacked = jax.tree.map(split, (batch, keys))

    def add(totals, xs):
      return jax.tree.map(jnp.add, totals, micro(*xs)), None

    first = jax.tree.map(lambda x: x[0], stacked)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(micro, *first))
    totals, _ = jax.lax.scan(add, zeros, stacked)
    return totals

  def noisy_mean(self, clipped_sum, rng, step):
    """The clipped sum plus N(0, (sigma C)^2) in every trained coordinate, over the expected batch.
    The noise's key is a function of (rng, step), the same on every device; the draws are
    bigjax.draws.normal's (two a Threefry hash: half jax.random.normal's cost, the same law)."""
    key = jax.random.fold_in(jax.random.fold_in(rng, step), _NOISE_STREAM)
    leaves, treedef = jax.tree.flatten(clipped_sum)
    frozen = self._frozen(clipped_sum)
    std = self.noise_multiplier * self.clip_norm
    noisy = [g if i in frozen else g + (std * draws.normal(k, g.shape, jnp.float32)).astype(g.dtype)
             for i, (g, k) in enumerate(zip(leaves, jax.random.split(key, len(leaves))))]
    return jax.tree.map(lambda g: g / self.expected_batch, jax.tree.unflatten(treedef, noisy))
