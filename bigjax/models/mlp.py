"""Bag-of-embeddings MLP sentiment model (a Deep Averaging Network)."""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.models.common import length_mask
from bigjax.models.spec import CLASSIFIER, ModelSpec


def bigram_ids(token_ids, buckets: int):
  """int32[B, T] -> int32[B, T]: a hash of each adjacent pair (t, t+1) into [0, buckets).

  The last position pairs with nothing; the model masks it (and every pair that reaches
  past a row's length), so the ids there do not matter.
  """
  first = token_ids.astype(jnp.uint32)
  second = jnp.pad(token_ids[:, 1:], ((0, 0), (0, 1))).astype(jnp.uint32)
  mixed = first * jnp.uint32(2654435761) ^ (second + jnp.uint32(0x7F4A7C15)) * jnp.uint32(2246822519)
  return ((mixed ^ (mixed >> 15)) % jnp.uint32(buckets)).astype(jnp.int32)


ACTIVATIONS = {'relu': nn.relu, 'gelu': nn.gelu, 'tanh': jnp.tanh}


class MLPClassifier(nn.Module):
  """token ids -> embeddings -> mean over real tokens -> [dropout, Dense, relu]* -> dropout -> logits.

  With bigram_buckets > 0, hashed embeddings of adjacent token pairs join the mean
  (fastText's bigram features): word order at the scale of a phrase ("not good").
  """
  vocab_size: int
  num_classes: int
  embed_dim: int = 300
  hidden_dims: Sequence[int] = (256,)
  dropout: float = 0.5
  word_dropout: float = 0.0  # Training drops whole tokens from the mean (Iyyer et al. 2015).
  bigram_buckets: int = 0  # Hash buckets (embedding rows) for token pairs; 0: unigrams only.
  embed_init_std: float = 1.0  # The tables start N(0, embed_init_std^2).
  # The hidden layers' f in y = f(Wx + b): 'relu', or a smooth one ('gelu', 'tanh'), along whose
  # paths integrated gradients' quadrature converges fast (no kinks; docs/results/attributions.md).
  activation: str = 'relu'
  dtype: Any = None  # Compute dtype (e.g. jnp.bfloat16); None: that of the params.
  param_dtype: Any = jnp.float32

  def setup(self):
    self.embedding = nn.Embed(self.vocab_size, self.embed_dim,
                              embedding_init=nn.initializers.normal(stddev=self.embed_init_std),
                              dtype=self.dtype, param_dtype=self.param_dtype)
    if self.bigram_buckets:
      self.bigram_embedding = nn.Embed(self.bigram_buckets, self.embed_dim,
                                       embedding_init=nn.initializers.normal(stddev=self.embed_init_std),
                                       dtype=self.dtype, param_dtype=self.param_dtype)
    self.hidden = [nn.Dense(h, dtype=self.dtype, param_dtype=self.param_dtype) for h in self.hidden_dims]
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, token_ids, lengths, *, deterministic: bool = True):
    """int32[B, T], int32[B] -> float32[B, K]."""
    return self.logits_from_embeddings(self.embed(token_ids), lengths, deterministic=deterministic)

  def embed(self, token_ids):
    """int32[B, T] -> float32[B, T, E]. Attributions differentiate w.r.t. this output.

    With bigrams: float32[B, 2T, E], where position T + t holds the pair (t, t+1).
    """
    x = self.embedding(token_ids)
    if not self.bigram_buckets:
      return x
    return jnp.concatenate([x, self.bigram_embedding(bigram_ids(token_ids, self.bigram_buckets))], axis=1)

  def embedding_rows(self, token_ids):
    """int32[B, S]: the table row each slot of `embed` reads (bigram rows after the vocabulary's)."""
    if not self.bigram_buckets:
      return token_ids
    return jnp.concatenate([token_ids, self.vocab_size + bigram_ids(token_ids, self.bigram_buckets)], axis=1)

  def real_positions(self, lengths, width: int):
    """bool[B, width]: the positions of `embed`'s output that hold real tokens (or pairs)."""
    if not self.bigram_buckets:
      return length_mask(lengths, width)
    return jnp.concatenate([length_mask(lengths, width // 2), length_mask(lengths - 1, width // 2)], axis=1)

  def slot_tokens(self, width: int):
    """float32[S, width]: slot t is token t; bigram slot width + t is half token t, half t + 1."""
    eye = jnp.eye(width, dtype=jnp.float32)
    if not self.bigram_buckets:
      return eye
    pairs = 0.5 * (eye + jnp.eye(width, k=1, dtype=jnp.float32))  # Row t: tokens t and t + 1.
    pairs = pairs.at[-1, -1].set(1.0)  # The last pair has no second token (the model masks it).
    return jnp.concatenate([eye, pairs], axis=0)

  def pooled(self, embeddings, lengths, *, deterministic: bool = True):
    """Mean of the embeddings of real tokens: float32[B, T, E] -> float32[B, E]."""
    mask = self.real_positions(lengths, embeddings.shape[1])
    if self.word_dropout and not deterministic:
      keep = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - self.word_dropout, mask.shape)
      mask = mask & keep
    # where(), not multiply: padded positions then cannot leak NaN or Inf into the sum.
    total = jnp.where(mask[..., None], embeddings, 0.0).sum(axis=1)
    count = jnp.maximum(mask.sum(axis=1), 1)[:, None]
    return total / count.astype(total.dtype)

  def logits_from_embeddings(self, embeddings, lengths, *, deterministic: bool = True):
    x = self.pooled(embeddings, lengths, deterministic=deterministic)
    activation = ACTIVATIONS[self.activation]
    for dense in self.hidden:
      x = activation(dense(self.drop(x, deterministic=deterministic)))
    return self.head(self.drop(x, deterministic=deterministic))


def _build(own: dict, **common) -> MLPClassifier:
  return MLPClassifier(hidden_dims=(own['hidden_dim'],) * own['num_layers'], word_dropout=own['word_dropout'],
                       bigram_buckets=own['bigram_buckets'], embed_init_std=own.get('embed_init_std', 1.0),
                       activation=own.get('activation', 'relu'), **common)


def _training_flops(own: dict, *, batch: int, width: int, real_tokens: int, embed_dim: int,
                    num_classes: int) -> dict:
  """The dense layers' multiply-adds (the mean over tokens is elementwise work): per text, not per token."""
  del width, real_tokens
  hidden = own['hidden_dim']
  per_example = 2 * embed_dim * hidden + 2 * hidden * (hidden * (own['num_layers'] - 1) + num_classes)
  return {'executed': 3 * batch * per_example, 'useful': 3 * batch * per_example}


SPEC = ModelSpec(
    name='mlp', kind=CLASSIFIER, section='mlp', module=MLPClassifier, build=_build, training_flops=_training_flops,
    description='deep averaging network (the mean of token embeddings, then an MLP)',
    fields=dict(
        hidden_dim=(256, (1, None)),
        num_layers=(1, (0, None)),
        word_dropout=(0.0, (0.0, 1.0, 'low')),  # Drop whole tokens from the average while training.
        bigram_buckets=(0, (0, None)),  # >0 adds hashed token-pair embeddings to the average.
        # The tables start N(0, std^2). 0.1 made the SST-2 model that prunes to 80 % within a
        # point (docs/results/compression.md).
        embed_init_std=(1.0, (0.0, None, 'high')),
        activation='relu',  # The hidden layers' f.
    ),
    choices={'activation': tuple(ACTIVATIONS)})
