"""LSTM sentiment model: embedding -> dropout -> (Bi)LSTM -> dropout -> dense."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import flip_sequences

from bigjax.models.common import length_mask
from bigjax.models.spec import CLASSIFIER, LANGUAGE_MODEL, ModelSpec


@jax.custom_vjp
def _bf16_matmul(x, kernel, kernel_bf16, kernel_t_bf16):
  """x (f32) @ kernel with bf16 operands and f32 sums, in the forward and the backward pass.

  Autodiff of a bf16 dot would compute its backward dots from an f32 cotangent, which XLA:CPU
  runs in f32 (or worse, on a slow path for transposed operands). Here every dot takes bf16
  operands in the layout XLA:CPU's fast bf16 kernels want: `kernel_t_bf16` is kernel.T
  materialized once outside the recurrence, and x.T is materialized at each step. `kernel`
  itself (f32) only receives the gradient; the two bf16 copies are never differentiated.
  On the 2-core CPU a [64, 256] x [256, 1024] dot runs at ~360 GFLOP/s this way against ~140
  in f32 (docs/results/RESULTS.md).
  """
  del kernel, kernel_t_bf16
  return jnp.dot(x.astype(jnp.bfloat16), kernel_bf16, preferred_element_type=jnp.float32)


def _bf16_matmul_fwd(x, kernel, kernel_bf16, kernel_t_bf16):
  del kernel
  x_bf16 = x.astype(jnp.bfloat16)
  # The barrier keeps XLA from folding the transpose back into the weight-gradient dot.
  x_t_bf16 = jax.lax.optimization_barrier(x_bf16.T)
  # Saved as its uint16 bits: inside a scan each step's residual is written into a stacked
  # buffer, which XLA:CPU does in place for uint16 but, for bf16, by converting the whole
  # buffer to f32 and back at every step (0.3 ms per step at width 32).
  x_t_bits = jax.lax.bitcast_convert_type(x_t_bf16, jnp.uint16)
  return jnp.dot(x_bf16, kernel_bf16, preferred_element_type=jnp.float32), (x_t_bits, kernel_t_bf16)


def _bf16_matmul_bwd(residuals, cotangent):
  x_t_bits, kernel_t_bf16 = residuals
  x_t_bf16 = jax.lax.bitcast_convert_type(x_t_bits, jnp.bfloat16)
  cotangent = cotangent.astype(jnp.bfloat16)
  d_x = jnp.dot(cotangent, kernel_t_bf16, preferred_element_type=jnp.float32)
  d_kernel = jnp.dot(x_t_bf16, cotangent, preferred_element_type=jnp.float32)
  return d_x, d_kernel, None, None


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def drop_connect(kernel, rate: float, key):
  """kernel with each entry zeroed with probability `rate`, the rest scaled by 1/(1 - rate).

  Wan et al. 2013's DropConnect, as AWD-LSTM's weight drop applies it to the recurrent kernel:
  one mask per call, shared by every row and every time step, so the recurrence still runs
  one dense matmul per step and the mask costs one multiply of the [H, 4H] kernel per call.
  """
  keep = jax.random.bernoulli(key, 1.0 - rate, kernel.shape)
  return jnp.where(keep, kernel / (1.0 - rate), 0.0).astype(kernel.dtype)


def _bf16_copies(kernel):
  """The bf16 kernel and its materialized transpose, constants to autodiff."""
  kernel_bf16 = jax.lax.stop_gradient(kernel).astype(jnp.bfloat16)
  return kernel_bf16, jax.lax.optimization_barrier(kernel_bf16.T)


class LSTMLayer(nn.Module):
  """One LSTM direction over padded sequences: flax's OptimizedLSTMCell, owning its biases.

  It computes what nn.RNN(nn.OptimizedLSTMCell) computes, at the same speed on the CPU
  (tests/test_models.py, docs/results/RESULTS.md), with gates (i, f, g, o) fused in one kernel as
  in flax and PyTorch, but `forget_bias` can start the forget gate open (Jozefowicz et al.
  2015; Keras's unit_forget_bias), which long IMDB reviews need. After a row's last real
  token its state stays frozen, so padding never changes the final state; `reverse` runs
  each row from its last real token back to its first. With `dtype=bfloat16` the matmuls
  take bf16 operands and sum in f32, forwards and backwards (`_bf16_matmul`); gates, the
  cell state, the parameters and their gradients stay in f32. With `weight_drop` > 0, training
  (deterministic=False, a 'dropout' rng) runs the recurrence on `drop_connect(kernel_h)`.
  """
  hidden_dim: int
  reverse: bool = False
  forget_bias: float = 0.0  # Initial bias of the forget gate; 1.0 remembers longer from the start.
  weight_drop: float = 0.0  # DropConnect rate of the hidden-to-hidden kernel while training.
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, lengths, initial=None, *, deterministic: bool = True):
    """x: [B, T, E], lengths: int32[B] -> (final (c, h), per-step h [B, T, H]).

    initial: the (c, h) to start from, each [B, H] (a language model carries it from one
    BPTT window to the next); zeros by default.
    """
    batch, width, _ = x.shape
    hidden = self.hidden_dim
    if self.reverse:
      x = flip_sequences(x, lengths, num_batch_dims=1, time_major=False)

    def bias_init(key, shape, dtype):
      del key
      return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(self.forget_bias)

    kernel_i = self.param('kernel_i', nn.initializers.lecun_normal(), (x.shape[-1], 4 * hidden), self.param_dtype)
    kernel_h = self.param('kernel_h', nn.initializers.orthogonal(column_axis=-1), (hidden, 4 * hidden),
                          self.param_dtype)
    bias = self.param('bias', bias_init, (4 * hidden,), self.param_dtype)
    if self.weight_drop and not deterministic:
      kernel_h = drop_connect(kernel_h, self.weight_drop, self.make_rng('dropout'))
    compute = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
    state_dtype = jnp.promote_types(compute, jnp.float32)  # Gates and cell state: f32 even under bf16.
    real = jnp.swapaxes(length_mask(lengths, width), 0, 1)[..., None]  # [T, B, 1]
    if compute == jnp.bfloat16:
      copies_i, copies_h = _bf16_copies(kernel_i), _bf16_copies(kernel_h)
      project_i = lambda x_t: _bf16_matmul(x_t.astype(jnp.float32), kernel_i, *copies_i)
      project_h = lambda h: _bf16_matmul(h, kernel_h, *copies_h)
    else:
      if kernel_i.dtype != compute:  # (A no-op cast would also fail on qwix's quantized kernels.)
        kernel_i, kernel_h = kernel_i.astype(compute), kernel_h.astype(compute)
      project_i = lambda x_t: jnp.dot(x_t.astype(compute), kernel_i, preferred_element_type=state_dtype)
      project_h = lambda h: jnp.dot(h.astype(compute), kernel_h, preferred_element_type=state_dtype)

    def step(carry, inputs):
      c, h = carry
      x_t, is_real = inputs
      gates = project_i(x_t) + project_h(h) + bias
      i, f, g, o = jnp.split(gates, 4, axis=-1)
      new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
      c = jnp.where(is_real, new_c, c)
      h = jnp.where(is_real, new_h, h)
      return (c, h), h

    if initial is None:
      zeros = jnp.zeros((batch, hidden), state_dtype)
      initial = (zeros, zeros)
    final, states = jax.lax.scan(step, tuple(initial), (jnp.swapaxes(x, 0, 1), real))
    states = jnp.swapaxes(states, 0, 1)
    if self.reverse:
      states = flip_sequences(states, lengths, num_batch_dims=1, time_major=False)
    return final, states


def _encoder_setup(module, directions, locked_dropout: bool = False):
  """The embedding, LSTM layers and dropout that the classifier and the language model share.

  Same names in both, so a language model's encoder restores into a classifier leaf for leaf.
  locked_dropout: one mask per sequence, the same at every time step (Gal & Ghahramani's
  variational dropout, AWD-LSTM's locked dropout) for the [B, T, D] activations.
  """
  # No compute dtype for the lookup: flax would cast the whole table to it at every step,
  # and the LSTM casts what it reads itself.
  module.embedding = nn.Embed(module.vocab_size, module.embed_dim,
                              embedding_init=nn.initializers.normal(stddev=1.0), param_dtype=module.param_dtype)
  module.layers = [[LSTMLayer(module.hidden_dim, reverse=reverse, forget_bias=module.forget_bias,
                              weight_drop=module.weight_drop, dtype=module.dtype, param_dtype=module.param_dtype)
                    for reverse in directions] for _ in range(module.num_layers)]
  module.drop = nn.Dropout(module.dropout, broadcast_dims=(1,) if locked_dropout else ())


def _encode(module, embeddings, lengths, deterministic: bool, initial=None):
  """(per-token states float32[B, T, H*dirs], final h float32[B, H*dirs], final (c, h) per layer).

  initial: a (c, h) per layer to start from (one direction only), or None for zeros.
  """
  x = module.drop(embeddings, deterministic=deterministic)
  final, carries = None, []
  for i, directions in enumerate(module.layers):
    if i:  # Dropout between stacked layers, as in cuDNN/PyTorch multi-layer LSTMs.
      x = module.drop(x, deterministic=deterministic)
    outputs = [direction(x, lengths, None if initial is None else initial[i], deterministic=deterministic)
               for direction in directions]
    carries.append(outputs[0][0])
    final = jnp.concatenate([carry[1] for carry, _ in outputs], axis=-1)
    x = jnp.concatenate([s for _, s in outputs], axis=-1)
  return x, final, tuple(carries)


class LSTMClassifier(nn.Module):
  """Classifies from the LSTM state at each sequence's last real token (and, for the
  backward direction of a bi-LSTM, at its first); with pooling='concat', from that and the
  max and mean of the states over the real tokens (ULMFiT's concat pooling: what the
  review said on the way, not only where it ended)."""
  vocab_size: int
  num_classes: int
  embed_dim: int = 300
  hidden_dim: int = 256
  num_layers: int = 1
  bidirectional: bool = False
  forget_bias: float = 0.0
  dropout: float = 0.5
  weight_drop: float = 0.0  # DropConnect on the recurrent kernels while training (LSTMLayer).
  pooling: str = 'last'  # last | concat
  head_hidden_dim: int = 0  # >0: ULMFiT's pooling classifier, a ReLU layer of this width before the output.
  dtype: Any = None  # Compute dtype (e.g. jnp.bfloat16); None: that of the params.
  param_dtype: Any = jnp.float32

  def setup(self):
    _encoder_setup(self, (False, True) if self.bidirectional else (False,))
    if self.head_hidden_dim:
      # Named so that init.drop=^head (a new head) drops it with the output layer.
      self.head_hidden = nn.Dense(self.head_hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, token_ids, lengths, *, deterministic: bool = True):
    """int32[B, T], int32[B] -> float32[B, K]."""
    return self.logits_from_embeddings(self.embed(token_ids), lengths, deterministic=deterministic)

  def embed(self, token_ids):
    """int32[B, T] -> float32[B, T, E]. Attributions differentiate w.r.t. this output."""
    return self.embedding(token_ids)

  def embedding_rows(self, token_ids):  # pylint: disable=no-self-use
    """int32[B, T]: the table row each slot of `embed` reads (its token's)."""
    return token_ids

  def sequence_states(self, embeddings, lengths, *, deterministic: bool = True):
    """Per-token states float32[B, T, H*dirs] and final states float32[B, H*dirs].

    A language-model head reads the per-token states; the classifier the final ones.
    """
    return _encode(self, embeddings, lengths, deterministic)[:2]

  def token_states(self, token_ids, lengths, *, deterministic: bool = True):
    """int32[B, T] -> float32[B, T, H*dirs]: the top layer's state at each token."""
    return self.sequence_states(self.embed(token_ids), lengths, deterministic=deterministic)[0]

  def logits_from_embeddings(self, embeddings, lengths, *, deterministic: bool = True):
    states, features = self.sequence_states(embeddings, lengths, deterministic=deterministic)
    if self.pooling == 'concat':
      real = length_mask(lengths, states.shape[1])[..., None]
      most = jnp.max(jnp.where(real, states, -jnp.inf), axis=1)
      most = jnp.where(lengths[:, None] > 0, most, 0.0)  # Filler rows (no tokens) read zeros.
      mean = jnp.sum(states * real, axis=1) / jnp.maximum(lengths, 1)[:, None].astype(states.dtype)
      features = jnp.concatenate([features, most, mean], axis=-1)
    features = self.drop(features, deterministic=deterministic)
    if self.head_hidden_dim:
      features = self.drop(nn.relu(self.head_hidden(features)), deterministic=deterministic)
    return self.head(features)

  @staticmethod
  def slot_tokens(width: int):
    """Embedding slot t is token t."""
    return jnp.eye(width, dtype=jnp.float32)


class LSTMLanguageModel(nn.Module):
  """Next-token prediction: embedding -> dropout -> LSTM layers -> dropout -> vocabulary logits.

  Its encoder has the classifier's parameter names (`embedding`, `layers_*`), so a
  classifier can start from it with init.checkpoint. With tie_embeddings the output layer
  is the embedding table itself (Press & Wolf 2017), after a projection to its width: the
  softmax then costs embed_dim (not hidden_dim) multiply-adds per vocabulary entry.
  Regularisation as in AWD-LSTM (Merity et al. 2018): token dropout drops whole input
  vectors (`token_dropout`), weight drop masks the recurrent kernels (`weight_drop`), and the
  other dropouts are locked (one mask per sequence,
  shared over time). `carried` starts from a given state and returns the final one, for
  truncated BPTT over a contiguous stream.
  """
  vocab_size: int
  embed_dim: int = 300
  hidden_dim: int = 256
  num_layers: int = 1
  forget_bias: float = 0.0
  dropout: float = 0.5
  token_dropout: float = 0.0
  weight_drop: float = 0.0  # DropConnect on the recurrent kernels while training (LSTMLayer).
  tie_embeddings: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def setup(self):
    _encoder_setup(self, (False,), locked_dropout=True)
    self.drop_tokens = nn.Dropout(self.token_dropout, broadcast_dims=(2,))
    if self.tie_embeddings:
      self.lm_projection = nn.Dense(self.embed_dim, param_dtype=self.param_dtype)
    else:  # One row per vocabulary entry, as the embedding table: sampled softmax gathers rows.
      self.lm_kernel = self.param('lm_kernel', nn.initializers.lecun_normal(in_axis=-1, out_axis=-2),
                                  (self.vocab_size, self.hidden_dim), self.param_dtype)
    self.lm_bias = self.param('lm_bias', nn.initializers.zeros, (self.vocab_size,), self.param_dtype)

  def initial_carry(self, rows: int):
    """The zero state of every layer, (c, h) each float32[rows, H]: where a stream starts."""
    zeros = jnp.zeros((rows, self.hidden_dim), jnp.float32)
    return tuple((zeros, zeros) for _ in range(self.num_layers))

  def token_states(self, token_ids, lengths, *, deterministic: bool = True):
    """int32[B, T] -> float32[B, T, H]: the top layer's state at each token."""
    return self._states(token_ids, lengths, None, deterministic)[0]

  def __call__(self, token_ids, lengths, *, deterministic: bool = True):
    """int32[B, T], int32[B] -> float32[B, T, V]: logits of the token after each position."""
    return self.carried(token_ids, lengths, None, deterministic=deterministic)[0]

  def carried(self, token_ids, lengths, initial, targets=None, negatives=None, *, deterministic: bool = True):
    """(logits, final (c, h) per layer), starting from `initial` (None: zeros).

    logits: float32[B, T, V]; or, given targets int32[B, T] and negatives int32[K] (a
    sampled softmax), float32[B, T, 1 + K]: each target's logit, then the K negatives'.
    """
    states, carries = self._states(token_ids, lengths, initial, deterministic)
    return self._vocabulary_logits(self.drop(states, deterministic=deterministic), targets, negatives), carries

  def _states(self, token_ids, lengths, initial, deterministic):
    embeddings = self.drop_tokens(self.embedding(token_ids), deterministic=deterministic)
    states, _, carries = _encode(self, embeddings, lengths, deterministic, initial)
    return states, carries

  def _vocabulary_logits(self, states, targets, negatives):
    batch, width, _ = states.shape
    if self.tie_embeddings:
      states, table = self.lm_projection(states), self.embedding.embedding
    else:
      table = self.lm_kernel
    flat = states.reshape(batch * width, -1).astype(jnp.float32)
    kernel = table.T if negatives is None else table[negatives].T  # [D, V] or [D, K]
    if self.dtype == jnp.bfloat16:  # The softmax's matmul is most of a step: bf16 operands, f32 sums.
      logits = _bf16_matmul(flat, kernel, *_bf16_copies(kernel))
    else:
      logits = jnp.dot(flat, kernel)
    if negatives is None:
      return (logits + self.lm_bias).reshape(batch, width, -1)
    target_rows = targets.reshape(-1)
    target_logits = jnp.sum(flat * table[target_rows], axis=-1) + self.lm_bias[target_rows]
    logits = jnp.concatenate([target_logits[:, None], logits + self.lm_bias[negatives]], axis=-1)
    return logits.reshape(batch, width, -1)


_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}  # None: the params' dtype.

# model.lstm: the classifier and the language model share it (a classifier starts from a
# language model's encoder); keys marked for one are ignored by the other.
_FIELDS = dict(
    hidden_dim=(256, (1, None)),
    num_layers=(1, (1, None)),
    bidirectional=False,  # Classifier only.
    # Classifier only: what the head reads. last: the state after the last token; concat: that,
    # and the max and the mean of the states over the text (ULMFiT's concat pooling).
    pooling='last',
    head_hidden_dim=(0, (0, None)),  # Classifier only: a ReLU layer between the pooled features and the output.
    forget_bias=0.0,  # Initial forget-gate bias (1.0 helps long texts).
    # bfloat16 runs the LSTM's matmuls on bf16 operands with f32 sums (parameters, gradients,
    # gates and cell state stay f32). Fast where the hardware has bf16 dot instructions
    # (AVX512-BF16/AMX CPUs, GPUs, TPUs); on an AVX2-only CPU float32 trained 1.24-1.37x faster,
    # and a bf16 run there warns (bigjax/hostcpu.py).
    dtype='float32',
    tie_embeddings=False,  # Language model only: the output layer is the embedding table.
    # Language model only: drop whole input vectors (AWD-LSTM's embedding dropout, per position).
    token_dropout=(0.0, (0.0, 1.0, 'low')),
    # DropConnect on the hidden-to-hidden kernels while training (AWD-LSTM's weight drop): one
    # mask per forward pass, shared by the batch and every time step: one [H, 4H] multiply.
    weight_drop=(0.0, (0.0, 1.0, 'low')),
)
_CHOICES = {'dtype': tuple(_DTYPES), 'pooling': ('last', 'concat')}


def _build_classifier(own: dict, **common) -> LSTMClassifier:
  return LSTMClassifier(hidden_dim=own['hidden_dim'], num_layers=own['num_layers'],
                        bidirectional=own['bidirectional'], forget_bias=own['forget_bias'],
                        weight_drop=own.get('weight_drop', 0.0), pooling=own.get('pooling', 'last'),
                        head_hidden_dim=own.get('head_hidden_dim', 0), dtype=_DTYPES[own['dtype']], **common)


def _build_language_model(own: dict, num_classes, **common) -> LSTMLanguageModel:
  del num_classes  # A language model predicts tokens.
  return LSTMLanguageModel(hidden_dim=own['hidden_dim'], num_layers=own['num_layers'],
                           forget_bias=own['forget_bias'], tie_embeddings=own['tie_embeddings'],
                           token_dropout=own.get('token_dropout', 0.0), weight_drop=own.get('weight_drop', 0.0),
                           dtype=_DTYPES[own['dtype']], **common)


def _recurrence_flops(own: dict, embed_dim: int, directions: int) -> tuple[int, int]:
  """(multiply-adds per token of every layer's gates, the last layer's output width)."""
  hidden, per_token, inputs = own['hidden_dim'], 0, embed_dim
  for _ in range(own['num_layers']):
    per_token += directions * 2 * (inputs + hidden) * 4 * hidden
    inputs = directions * hidden
  return per_token, inputs


def _classifier_flops(own: dict, *, batch: int, width: int, real_tokens: int, embed_dim: int,
                      num_classes: int) -> dict:
  """By hand: XLA's cost analysis counts a scan's body once, whatever its length. 'executed'
  counts padded positions (work done), 'useful' real tokens only; elementwise work is left out."""
  per_token, features = _recurrence_flops(own, embed_dim, 2 if own.get('bidirectional') else 1)
  head = 2 * batch * features * num_classes
  return {'executed': 3 * (batch * width * per_token + head), 'useful': 3 * (real_tokens * per_token + head)}


def _language_model_flops(own: dict, *, batch: int, width: int, real_tokens: int, embed_dim: int,
                          num_classes: int) -> dict:
  """As the classifier's, with a head at every token: the tied projection to embed_dim, then the
  output rows (num_classes: the logits per token, 1 + negatives or the vocabulary)."""
  per_token, _ = _recurrence_flops(own, embed_dim, 1)
  per_token += 2 * own['hidden_dim'] * embed_dim + 2 * embed_dim * num_classes
  return {'executed': 3 * batch * width * per_token, 'useful': 3 * real_tokens * per_token}


# Static activation scales: the recurrent matmuls run inside a lax.scan, where qwix cannot keep
# activation ranges.
CLASSIFIER_SPEC = ModelSpec(
    name='lstm', kind=CLASSIFIER, section='lstm', module=LSTMClassifier, fields=_FIELDS, choices=_CHOICES,
    build=_build_classifier,
    training_flops=_classifier_flops, static_activation_scales=False,
    description='LSTM over the tokens, classified from its state at the last real token')
LANGUAGE_MODEL_SPEC = ModelSpec(
    name='lstm_lm', kind=LANGUAGE_MODEL, section='lstm', module=LSTMLanguageModel, fields=_FIELDS, choices=_CHOICES,
    build=_build_language_model, training_flops=_language_model_flops, static_activation_scales=False,
    description='LSTM language model (next-token prediction)')
