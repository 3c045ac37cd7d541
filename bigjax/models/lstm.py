"""LSTM sentiment model: embedding -> dropout -> (Bi)LSTM -> dropout -> dense."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class LSTMClassifier(nn.Module):
  """Classifies from the LSTM state at each sequence's last real token.

  `nn.RNN` with `seq_lengths` freezes the carry after a row's last real token and the
  backward direction starts at it, so padding does not change the result.
  """
  vocab_size: int
  num_classes: int
  embed_dim: int = 300
  hidden_dim: int = 256
  num_layers: int = 1
  bidirectional: bool = False
  dropout: float = 0.5
  dtype: Any = None  # Compute dtype (e.g. jnp.bfloat16); None: that of the params.
  param_dtype: Any = jnp.float32

  def setup(self):
    self.embedding = nn.Embed(self.vocab_size, self.embed_dim,
                              embedding_init=nn.initializers.normal(stddev=1.0),
                              dtype=self.dtype, param_dtype=self.param_dtype)
    layers = []
    for _ in range(self.num_layers):
      forward = nn.RNN(nn.OptimizedLSTMCell(self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype), return_carry=True)
      if self.bidirectional:
        backward = nn.RNN(nn.OptimizedLSTMCell(self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype), return_carry=True)
        layers.append(nn.Bidirectional(forward, backward, return_carry=True))
      else:
        layers.append(forward)
    self.layers = layers
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, token_ids, lengths, *, deterministic: bool = True):
    """int32[B, T], int32[B] -> float32[B, K]."""
    return self.logits_from_embeddings(self.embed(token_ids), lengths, deterministic=deterministic)

  def embed(self, token_ids):
    """int32[B, T] -> float32[B, T, E]. Attributions differentiate w.r.t. this output."""
    return self.embedding(token_ids)

  def sequence_states(self, embeddings, lengths, *, deterministic: bool = True):
    """Per-token states float32[B, T, H*dirs] and final states float32[B, H*dirs].

    A language-model head reads the per-token states; the classifier the final ones.
    """
    x = self.drop(embeddings, deterministic=deterministic)
    final = None
    for i, layer in enumerate(self.layers):
      if i:  # Dropout between stacked layers, as in cuDNN/PyTorch multi-layer LSTMs.
        x = self.drop(x, deterministic=deterministic)
      carry, x = layer(x, seq_lengths=lengths)
      if self.bidirectional:  # carry = ((c, h) forward, (c, h) backward)
        final = jnp.concatenate([carry[0][1], carry[1][1]], axis=-1)
      else:
        final = carry[1]
    return x, final

  def logits_from_embeddings(self, embeddings, lengths, *, deterministic: bool = True):
    _, final = self.sequence_states(embeddings, lengths, deterministic=deterministic)
    return self.head(self.drop(final, deterministic=deterministic))
