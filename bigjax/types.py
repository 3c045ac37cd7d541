"""Types shared by data, models, tasks and training. Imports nothing from bigjax."""
from typing import Any, Callable, NamedTuple, Optional

Array = Any  # jax.Array or np.ndarray
Key = Any  # a raw PRNG key, uint32[2]
Params = Any  # a pytree of arrays


class Batch(NamedTuple):
  """A padded batch. A NamedTuple is a pytree, so it passes through jit and pmap as is.

  Filler rows (added so every batch has the same number of rows) have weight 0 and
  length 0; every reduction in training and evaluation is weighted by `weights`.
  Tasks that predict per token (a language model) also get `targets` and
  `target_weights`, and, over a contiguous stream, `continues`; a masked language model
  gets `positions` too, with targets and target weights per position; None (an empty
  pytree) elsewhere.
  """
  token_ids: Array  # int32[B, T]; 0 is padding
  lengths: Array  # int32[B]; real tokens per row
  labels: Array  # int32[B]
  weights: Array  # float32[B]; 1 for real rows, 0 for filler rows
  # int32[B, T]: what position t predicts (the next token, say); with `positions`, int32[B, M]:
  # the original token at each of them.
  targets: Optional[Array] = None
  target_weights: Optional[Array] = None  # float32[B, T] (or [B, M]): 1 where a target counts
  # float32[B]: 1 where a row continues the previous batch's row (a BPTT window of the same
  # stream: the carried state is kept), 0 where it starts afresh; None: nothing is carried.
  continues: Optional[Array] = None
  # int32[B, M]: the positions a masked language model predicts, M slots a row, the same M in
  # every batch whatever its width; a row's unused slots have target weight 0.
  positions: Optional[Array] = None


class ModelFns(NamedTuple):
  """All the training and post-training code knows of a model: named pure functions.

  A dropout_key of None runs the model deterministically (evaluation). Entries a model
  does not have are None.

  init(key, token_ids, lengths) -> params
  logits(params, token_ids, lengths, dropout_key=None) -> float32[B, K]
  embed(params, token_ids) -> float32[B, S, E]: the vectors the model reads; S slots per
    row (S = T, or 2T for the MLP with hashed bigrams). Attributions differentiate here.
  logits_from_embeddings(params, embeddings, lengths, dropout_key=None) -> float32[B, K]
  slot_tokens(width) -> float32[S, T]: how much embedding slot s belongs to token t
    (identity, or 1/2 to each token of a bigram), to fold slot attributions onto tokens.
  sequence_states(params, token_ids, lengths, dropout_key=None) -> float32[B, T, H]
  token_logits(params, token_ids, lengths, dropout_key=None) -> float32[B, T, V]: a
    language model's next-token logits at each position.
  initial_carry(rows) -> carry: a recurrent model's zero state for `rows` rows (a pytree of
    [rows, ...] arrays).
  token_logits_carried(params, token_ids, lengths, carry, dropout_key=None, targets=None,
    negatives=None) -> (logits, carry): token_logits starting from `carry`, and the state
    after each row's last token; with targets [B, T] and negatives [K] (a sampled softmax)
    the logits are [B, T, 1 + K]: each target's, then the negatives'.
  logical_axes() -> a tree like init's params of PartitionSpecs of logical axis names
    ('vocab', 'embed', ...), where the model declares them; None where it does not (its
    parameters are then placed on a mesh by shape: bigjax.train.sharding).
  embedding_rows(params, token_ids) -> int32[B, S]: the table row embedding slot s reads (rows of
    different tables numbered apart), where `embed` is only table lookups: DP-SGD's per-example
    norms of the tables come from it (bigjax.privacy.clipping).
  masked_logits(params, token_ids, lengths, positions, dropout_key=None) -> float32[B, M, V]:
    a masked language model's logits at positions int32[B, M] of each row (only there: the
    [B, T, V] logits of every position are never formed).
  """
  init: Callable[..., Params]
  logits: Optional[Callable[..., Array]] = None
  embed: Optional[Callable[..., Array]] = None
  logits_from_embeddings: Optional[Callable[..., Array]] = None
  slot_tokens: Optional[Callable[[int], Array]] = None
  sequence_states: Optional[Callable[..., Array]] = None
  token_logits: Optional[Callable[..., Array]] = None
  initial_carry: Optional[Callable[[int], Any]] = None
  token_logits_carried: Optional[Callable[..., Any]] = None
  logical_axes: Optional[Callable[[], Any]] = None
  masked_logits: Optional[Callable[..., Array]] = None
  embedding_rows: Optional[Callable[..., Array]] = None
