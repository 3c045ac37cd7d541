"""A BERT-style Transformer encoder classifier (Devlin et al. 2019; Vaswani et al. 2017).

token ids -> word + learned position + token-type embeddings -> LayerNorm -> dropout
-> num_layers x [multi-head self-attention, MLP] (post-LN as BERT, or pre-LN with a final
LayerNorm) -> pooling (the first position, or the mean over real tokens) -> optional pooler
(dense + tanh, BERT's; or + ReLU, DistilBERT's) -> dropout -> dense logits. `mlm_logits` adds BERT's masked-LM head
(transform dense + GELU + LayerNorm, a decoder tied to the word embeddings, a bias).

Padding is never attended to: every attention call takes each row's length as its keys'
length, so a padded position (whatever its token id) changes no real position's state, and
neither pooling reads it. pooling='cls' reads the state at the first position: a pretrained
model's [CLS] (bigjax.huggingface: its tokenizer adds it), or, with a tokenizer bigjax trained
(which adds none), the text's first token, which attends to the whole text as [CLS] does.

Parameters (float32 always; `dtype` is the matmuls' compute dtype), with a BERT checkpoint's
names on the right (bigjax.huggingface.weights maps BERT, RoBERTa and DistilBERT checkpoints
both ways; PyTorch Linear weights are [out, in], and query/key/value's [H, H] splits into
[H, heads, head_dim]):

  embedding/embedding            [V, H]      bert.embeddings.word_embeddings
  position_embedding             [P, H]      bert.embeddings.position_embeddings
  type_embedding                 [types, H]  bert.embeddings.token_type_embeddings
  embedding_norm/{scale, bias}   [H]         bert.embeddings.LayerNorm.{weight, bias}
  layers_i/query/{kernel, bias}  [H, N, D], [N, D]  encoder.layer.i.attention.self.query
  layers_i/key, layers_i/value   (as query)         ....attention.self.{key, value}
  layers_i/attention_output      [N, D, H], [H]     ....attention.output.dense
  layers_i/attention_norm        [H]                ....attention.output.LayerNorm
  layers_i/intermediate          [H, I], [I]        ....intermediate.dense
  layers_i/output                [I, H], [H]        ....output.dense
  layers_i/output_norm           [H]                ....output.LayerNorm
  final_norm                     [H]         (pre-LN only; BERT has none)
  pooler_dense/{kernel, bias}    [H, H], [H] bert.pooler.dense (pooler=True only)
  head/{kernel, bias}            [H, K], [K] the classifier (a new one for each task)
  mlm_head/transform             [H, H], [H] cls.predictions.transform.dense
  mlm_head/transform_norm        [H]         cls.predictions.transform.LayerNorm
  mlm_head/bias                  [V]         cls.predictions.bias (the decoder: embedding, tied)

In pre-LN, attention_norm normalizes the attention's input and output_norm the MLP's.
mlm_head's parameters exist only in params initialized through `mlm_logits`
(module.init(..., method='mlm_logits'), as the registry's `transformer_mlm` does); pooler_dense
and head only through `__call__`.
`embedding/embedding` is where bigjax.transfer looks for every model's token table, so
init.embeddings (pretrained word vectors) works here too.

Every parameter is declared with logical axis names (nn.with_logical_partitioning): 'vocab',
'position', 'embed' (the hidden size H), 'heads', 'kv' (head_dim), 'mlp' (the intermediate
size); None for small axes that stay replicated (classes, token types, the second axis of the
square pooler and MLM transform, which may not repeat 'embed'). `logical_axes` returns them as
PartitionSpecs, for nn.logical_to_mesh_sharding. `init` returns the plain arrays (the boxes
unboxed): the rest of bigjax (checkpoints, optimizers, pruning, init.checkpoint) walks params
as nested dicts of arrays, and apply takes either form.
"""
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax import draws
from bigjax.models.common import Dropout, length_mask
from bigjax.models.spec import CLASSIFIER, MASKED_LM, ModelSpec

# jax.checkpoint_policies that take no arguments: model.transformer.remat's choices ('': off).
REMAT_POLICIES = ('', 'nothing_saveable', 'dots_saveable', 'dots_with_no_batch_dims_saveable', 'checkpoint_dots',
                  'checkpoint_dots_with_no_batch_dims', 'everything_saveable')
GELUS = {'exact': functools.partial(jax.nn.gelu, approximate=False),  # BERT's and Hugging Face's "gelu" (erf).
         'tanh': functools.partial(jax.nn.gelu, approximate=True)}  # "gelu_new" (GPT-2's tanh approximation).
ATTENTIONS = ('xla', 'cudnn', '')  # jax.nn.dot_product_attention's implementation; '': JAX's choice.
POOLINGS = ('cls', 'mean')
POOLER_ACTIVATIONS = {'tanh': jnp.tanh, 'relu': jax.nn.relu}
_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}  # None: the params' dtype.


def _init(axes, init=None, std: float = 0.02):
  """A truncated-normal(std) initializer (BERT's initializer_range), or `init`, boxed with logical axes."""
  return nn.with_logical_partitioning(init or nn.initializers.truncated_normal(stddev=std), axes)


def _zeros(axes):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _wide(dtype):
  """The dtype of the residual stream, LayerNorms and logits: float32, or the params' if wider (float64 tests)."""
  return jnp.promote_types(dtype, jnp.float32)


def _layer_norm(eps: float, param_dtype, name: Optional[str] = None) -> nn.LayerNorm:
  """A LayerNorm over the hidden axis, computed in float32 (or wider) whatever the matmuls' dtype."""
  return nn.LayerNorm(epsilon=eps, dtype=_wide(param_dtype), param_dtype=param_dtype,
                      scale_init=_init(('embed',), nn.initializers.ones_init()), bias_init=_zeros(('embed',)),
                      name=name)


def attention(query, key, value, lengths, *, dropout_rate: float = 0.0, dropout_key=None,
              implementation: Optional[str] = 'xla'):
  """Softmax attention over each row's first `lengths` keys: [B, T, N, D] x3, int32[B] -> [B, T, N, D].

  jax.nn.dot_product_attention, with key_value_seq_lengths as the padding mask, except in two
  cases where the same computation is written out in XLA ops (masked logits set to a large
  negative number, as there, not -inf): attention dropout (a dropout_key and a rate > 0), which
  its fused kernels do not take, and float64 inputs, whose softmax it would round to float32.
  A row with length 0 (a filler row) attends to its first position: finite, and weighted 0.
  """
  key_lengths = jnp.maximum(lengths, 1).astype(jnp.int32)
  dropout = bool(dropout_rate) and dropout_key is not None
  if not dropout and query.dtype != jnp.float64:
    return jax.nn.dot_product_attention(query, key, value, key_value_seq_lengths=key_lengths,
                                        implementation=implementation or None)
  wide = _wide(query.dtype)  # Logits and softmax in float32 (float64 for float64 inputs).
  logits = jnp.einsum('btnd,bsnd->bnts', query, key, preferred_element_type=wide) * query.shape[-1] ** -0.5
  real = length_mask(key_lengths, key.shape[1])[:, None, None, :]
  weights = jax.nn.softmax(jnp.where(real, logits, -0.7 * jnp.finfo(jnp.float32).max), axis=-1)
  if dropout:
    keep, scale = draws.dropout_mask(dropout_key, dropout_rate, weights.shape)  # Four positions a hash.
    weights = jnp.where(keep, weights * scale, 0.0)
  return jnp.einsum('bnts,bsnd->btnd', weights.astype(value.dtype), value)


class TransformerBlock(nn.Module):
  """One encoder layer: self-attention and an MLP, each in a residual branch.

  post-LN (BERT): x = LN(x + attn(x)); x = LN(x + mlp(x)).
  pre-LN (Xiong et al. 2020): x = x + attn(LN(x)); x = x + mlp(LN(x)); the encoder then ends
  with a final LayerNorm. Dropout on each branch's output (BERT's hidden dropout).
  The residual stream and LayerNorms stay float32; the dense layers run in `dtype`.
  """
  embed_dim: int
  num_heads: int
  intermediate_dim: int
  layer_norm_eps: float = 1e-12
  pre_ln: bool = False
  gelu: str = 'exact'
  dropout: float = 0.1
  attention_dropout: float = 0.1
  attention: str = 'xla'
  init_std: float = 0.02
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, lengths, deterministic: bool = True):
    """float32[B, T, H], int32[B] -> float32[B, T, H]."""
    heads, head_dim = self.num_heads, self.embed_dim // self.num_heads
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    projection = functools.partial(nn.DenseGeneral, features=(heads, head_dim), dtype=self.dtype,
                                   param_dtype=self.param_dtype,
                                   kernel_init=_init(('embed', 'heads', 'kv'), std=self.init_std),
                                   bias_init=_zeros(('heads', 'kv')))
    drop = Dropout(self.dropout)
    attention_norm = _layer_norm(self.layer_norm_eps, self.param_dtype, 'attention_norm')
    output_norm = _layer_norm(self.layer_norm_eps, self.param_dtype, 'output_norm')

    h = attention_norm(x) if self.pre_ln else x
    q, k, v = (projection(name=name)(h) for name in ('query', 'key', 'value'))
    use_dropout = self.attention_dropout > 0 and not deterministic
    mixed = attention(q, k, v, lengths, dropout_rate=self.attention_dropout,
                      dropout_key=self.make_rng('dropout') if use_dropout else None, implementation=self.attention)
    mixed = nn.DenseGeneral(self.embed_dim, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
                            kernel_init=_init(('heads', 'kv', 'embed'), std=self.init_std),
                            bias_init=_zeros(('embed',)), name='attention_output')(mixed)
    x = x + drop(mixed, deterministic=deterministic)
    if not self.pre_ln:
      x = attention_norm(x)

    h = output_norm(x) if self.pre_ln else x
    h = dense(self.intermediate_dim, kernel_init=_init(('embed', 'mlp'), std=self.init_std),
              bias_init=_zeros(('mlp',)), name='intermediate')(h)
    h = GELUS[self.gelu](h)
    h = dense(self.embed_dim, kernel_init=_init(('mlp', 'embed'), std=self.init_std), bias_init=_zeros(('embed',)),
              name='output')(h)
    x = x + drop(h, deterministic=deterministic)
    if not self.pre_ln:
      x = output_norm(x)
    return x.astype(_wide(self.param_dtype))


class MLMHead(nn.Module):
  """BERT's masked-LM head: transform (dense, GELU, LayerNorm), then a decoder given from outside
  (the word embedding table: tied) plus a bias per word."""
  vocab_size: int
  embed_dim: int
  layer_norm_eps: float = 1e-12
  gelu: str = 'exact'
  init_std: float = 0.02
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, states, table, *, features_only: bool = False):
    """float32[B, T, H], the decoder float32[V, H] -> float32[B, T, V] (features_only: the
    transformed states float32[B, T, H])."""
    x = nn.Dense(self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=_init(('embed', None), std=self.init_std), bias_init=_zeros((None,)),
                 name='transform')(states)
    x = _layer_norm(self.layer_norm_eps, self.param_dtype, 'transform_norm')(GELUS[self.gelu](x))
    bias = self.param('bias', _zeros(('vocab',)), (self.vocab_size,), self.param_dtype)
    if features_only:
      return x
    compute = self.dtype or self.param_dtype
    logits = jnp.einsum('bth,vh->btv', x.astype(compute), table.astype(compute),
                        preferred_element_type=_wide(self.param_dtype))
    return logits + bias


class TransformerClassifier(nn.Module):
  """A BERT-style encoder; see the module's docstring for its layout and parameter names.

  embed_dim is the hidden size H (model.embed_dim); num_heads must divide it.
  """
  vocab_size: int
  num_classes: int
  embed_dim: int = 256
  num_layers: int = 4
  num_heads: int = 4
  intermediate_dim: int = 1024
  max_positions: int = 512
  type_vocab_size: int = 2  # BERT's segment A/B; single texts use type 0 (kept for BERT checkpoints).
  layer_norm_eps: float = 1e-12  # BERT's (RoBERTa's: 1e-5).
  pre_ln: bool = False  # False: post-LN (BERT); True: pre-LN with a final LayerNorm.
  gelu: str = 'exact'  # exact | tanh
  pooling: str = 'cls'  # cls (the first position) | mean (over real tokens)
  pooler: bool = True  # BERT's pooler, dense + tanh, on the pooled vector.
  pooler_activation: str = 'tanh'  # tanh (BERT's pooler, RoBERTa's head) | relu (DistilBERT's pre_classifier)
  attention: str = 'xla'  # jax.nn.dot_product_attention's implementation: xla | cudnn | '' (JAX's choice)
  attention_dropout: float = 0.1  # On the attention weights (BERT's attention_probs_dropout_prob).
  dropout: float = 0.1  # Embeddings, each residual branch, and before the head (BERT's hidden dropout).
  remat: str = ''  # '' or a jax.checkpoint_policies name: each block's activations recomputed in backward.
  init_std: float = 0.02  # BERT's initializer_range.
  dtype: Any = None  # Compute dtype of the matmuls (e.g. jnp.bfloat16); None: that of the params.
  param_dtype: Any = jnp.float32

  def setup(self):
    if self.embed_dim % self.num_heads:
      raise ValueError(f'transformer: num_heads={self.num_heads} does not divide embed_dim={self.embed_dim}')
    # No compute dtype for the lookup: flax would cast the whole table at every step.
    self.embedding = nn.Embed(self.vocab_size, self.embed_dim, param_dtype=self.param_dtype,
                              embedding_init=_init(('vocab', 'embed'), std=self.init_std))
    self.position_embedding = self.param('position_embedding', _init(('position', 'embed'), std=self.init_std),
                                         (self.max_positions, self.embed_dim), self.param_dtype)
    self.type_embedding = self.param('type_embedding', _init((None, 'embed'), std=self.init_std),
                                     (self.type_vocab_size, self.embed_dim), self.param_dtype)
    self.embedding_norm = _layer_norm(self.layer_norm_eps, self.param_dtype)
    self.layers = [self._block() for _ in range(self.num_layers)]
    if self.pre_ln:
      self.final_norm = _layer_norm(self.layer_norm_eps, self.param_dtype)
    self.drop = Dropout(self.dropout)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    if self.pooler:
      self.pooler_dense = dense(self.embed_dim, kernel_init=_init(('embed', None), std=self.init_std),
                                bias_init=_zeros((None,)))
    self.head = dense(self.num_classes, kernel_init=_init(('embed', None), std=self.init_std),
                      bias_init=_zeros((None,)))
    # A submodule: its parameters exist only where mlm_logits ran (a classifier's init has none).
    self.mlm_head = MLMHead(self.vocab_size, self.embed_dim, self.layer_norm_eps, self.gelu, self.init_std,
                            self.dtype, self.param_dtype)

  @nn.nowrap
  def _block(self, **kwargs) -> TransformerBlock:
    return TransformerBlock(self.embed_dim, self.num_heads, self.intermediate_dim, self.layer_norm_eps, self.pre_ln,
                            self.gelu, self.dropout, self.attention_dropout, self.attention, self.init_std, self.dtype,
                            self.param_dtype, **kwargs)

  def _rematerialized_layers(self, x, lengths, deterministic: bool):
    """The blocks as one jax.lax.scan over their stacked parameters, each step under
    jax.checkpoint with the remat policy: the backward pass recomputes a block's activations
    from its input, keeping only what the policy saves.

    A scan, not a Python loop of checkpointed blocks: XLA:CPU schedules the recomputations of
    an unrolled loop all at once, which keeps every block's activations alive again (a
    12-layer step's temporaries were the same with and without remat, 83 MB both). The loop
    of a scan runs one block's recomputation at a time. The parameters stay one set per layer
    (layers_i, as a checkpoint or an importer expects); the step stacks them, a copy of the
    blocks' weights.
    """
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(layer.variables['params'] for layer in self.layers))
    block = self._block(parent=None)  # Unbound: applied functionally to each layer's parameters.
    keys = jnp.zeros((self.num_layers, 2), jnp.uint32)
    if not deterministic and (self.dropout or self.attention_dropout):
      keys = jax.random.split(self.make_rng('dropout'), self.num_layers)

    def run_block(x, params_and_key):
      params, key = params_and_key
      rngs = None if deterministic else {'dropout': key}
      return block.apply({'params': params}, x, lengths, deterministic, rngs=rngs), None

    run_block = jax.checkpoint(run_block, policy=getattr(jax.checkpoint_policies, self.remat))
    return jax.lax.scan(run_block, x, (stacked, keys))[0]

  @nn.nowrap
  def init(self, *args, **kwargs):
    """Module.init with the logical-partitioning boxes taken off: plain arrays (see `logical_axes`)."""
    return nn.meta.unbox(super().init(*args, **kwargs))

  @nn.nowrap
  def init_with_output(self, *args, **kwargs):
    out, variables = super().init_with_output(*args, **kwargs)
    return out, nn.meta.unbox(variables)

  @nn.nowrap
  def logical_axes(self, token_ids, lengths, method: Any = None):
    """The params' logical axis names: a tree of PartitionSpecs like init's params (nothing computed).

    For nn.logical_to_mesh_sharding(specs, mesh, rules). method: as in init ('mlm_logits' for
    the MLM parameters).
    """
    boxed = jax.eval_shape(lambda: nn.Module.init_with_output(self, jax.random.PRNGKey(0), token_ids, lengths,
                                                              method=method)[1])
    return nn.get_partition_spec(boxed)['params']

  def __call__(self, token_ids, lengths, *, deterministic: bool = True):
    """int32[B, T], int32[B] -> float32[B, K]."""
    return self.logits_from_embeddings(self.embed(token_ids), lengths, deterministic=deterministic)

  def embed(self, token_ids):
    """int32[B, T] -> float32[B, T, H]: the word embeddings only (attributions differentiate here);
    position and type embeddings are added in `encode`."""
    return self.embedding(token_ids)

  def embedding_rows(self, token_ids):  # pylint: disable=no-self-use
    """int32[B, T]: the table row each slot of `embed` reads (its token's)."""
    return token_ids

  @staticmethod
  def slot_tokens(width: int):
    """Embedding slot t is token t."""
    return jnp.eye(width, dtype=jnp.float32)

  def encode(self, embeddings, lengths, *, deterministic: bool = True):
    """Word embeddings float32[B, T, H], int32[B] -> the last layer's states float32[B, T, H]."""
    width = embeddings.shape[1]
    if isinstance(width, int) and width > self.max_positions:  # (An exported function's width is symbolic.)
      raise ValueError(f'transformer: {width} tokens per row, more than max_positions={self.max_positions}')
    # A gather, not a slice, so a symbolic width exports; past the table it reads NaN, never a wrong row.
    positions = jnp.take(self.position_embedding, jnp.arange(width), axis=0, mode='fill', fill_value=jnp.nan)
    # Single texts: every position is of token type 0 (BERT's segment A).
    x = embeddings + positions[None] + self.type_embedding[0]
    x = self.drop(self.embedding_norm(x), deterministic=deterministic)
    if self.remat and not self.is_initializing():
      x = self._rematerialized_layers(x, lengths, deterministic)
    else:
      for layer in self.layers:
        x = layer(x, lengths, deterministic)
    return self.final_norm(x) if self.pre_ln else x

  def token_states(self, token_ids, lengths, *, deterministic: bool = True):
    """int32[B, T] -> float32[B, T, H]: the last layer's state at each token."""
    return self.encode(self.embed(token_ids), lengths, deterministic=deterministic)

  def logits_from_embeddings(self, embeddings, lengths, *, deterministic: bool = True):
    """float32[B, T, H] word embeddings, int32[B] -> float32[B, K]."""
    states = self.encode(embeddings, lengths, deterministic=deterministic)
    if self.pooling == 'cls':
      pooled = states[:, 0]
    else:
      real = length_mask(lengths, states.shape[1])[..., None]
      # where(), not multiply: nothing at a padded position can leak into the sum.
      pooled = jnp.where(real, states, 0.0).sum(axis=1) / jnp.maximum(lengths, 1)[:, None].astype(states.dtype)
    if self.pooler:
      pooled = POOLER_ACTIVATIONS[self.pooler_activation](self.pooler_dense(pooled))
    return self.head(self.drop(pooled, deterministic=deterministic)).astype(_wide(self.param_dtype))

  def mlm_features(self, token_ids, lengths, *, deterministic: bool = True):
    """int32[B, T], int32[B] -> float32[B, T, H]: what the MLM decoder multiplies by the word table."""
    states = self.token_states(token_ids, lengths, deterministic=deterministic)
    return self.mlm_head(states, None, features_only=True)

  def mlm_logits(self, token_ids, lengths, positions=None, *, deterministic: bool = True):
    """int32[B, T], int32[B] -> float32[B, T, V]: BERT's masked-LM logits at every position; with
    positions int32[B, M], float32[B, M, V] at those positions of each row only.

    The states are gathered at `positions` before the head, so pretraining never forms the
    [B, T, V] logits (at T = 128 and a 16k vocabulary, 8 MB a row). The decoder is the word
    embedding table itself (tied, as in BERT), plus a bias per word.
    """
    states = self.token_states(token_ids, lengths, deterministic=deterministic)
    if positions is not None:
      states = jnp.take_along_axis(states, positions[..., None].astype(jnp.int32), axis=1)
    return self.mlm_head(states, self.embedding.embedding)


def _build(own: dict, **common) -> TransformerClassifier:
  if own['attention'] == 'cudnn' and own['dtype'] != 'bfloat16':
    raise ValueError("model.transformer.attention='cudnn' takes bf16 inputs: set model.transformer.dtype='bfloat16'")
  return TransformerClassifier(
      num_layers=own['num_layers'], num_heads=own['num_heads'], intermediate_dim=own['intermediate_dim'],
      max_positions=own['max_positions'], type_vocab_size=own['type_vocab_size'],
      layer_norm_eps=own['layer_norm_eps'], pre_ln=own['pre_ln'], gelu=own['gelu'], pooling=own['pooling'],
      pooler=own['pooler'], pooler_activation=own.get('pooler_activation', 'tanh'), attention=own['attention'],
      attention_dropout=own['attention_dropout'],
      remat=own.get('remat', ''), init_std=own.get('init_std', 0.02), dtype=_DTYPES[own['dtype']], **common)


def _training_flops(own: dict, *, batch: int, width: int, real_tokens: int, embed_dim: int,
                    num_classes: int) -> dict:
  """Matmul FLOPs of a step (2 per multiply-add; 3x the forward pass for forward + backward).

  Per layer and row of T tokens: query, key, value and attention output, 4 T H^2 multiply-adds;
  attention scores and the weighted sum of values, 2 T^2 H; the MLP, 2 T H I. Then the pooler
  (H^2) and the head (H K) per row. 'executed' runs every row at the padded width; 'useful'
  counts real tokens, with the T^2 term at the batch's mean length (a lower bound on the sum of
  squares when lengths differ). Embedding lookups, LayerNorms, softmax and the MLM head are left out.
  """
  hidden, inner, layers = embed_dim, own['intermediate_dim'], own['num_layers']
  per_token = layers * 2 * (4 * hidden * hidden + 2 * hidden * inner)
  per_square = layers * 2 * 2 * hidden  # Times T^2.
  per_row = 2 * (hidden * num_classes + (hidden * hidden if own['pooler'] else 0))
  executed = batch * (width * per_token + width * width * per_square + per_row)
  mean_length = real_tokens / max(batch, 1)
  useful = real_tokens * per_token + batch * mean_length * mean_length * per_square + batch * per_row
  return {'executed': 3 * executed, 'useful': 3 * int(useful)}


# qwix calibrates a [B, T, H] matmul input with one static scale per position of the calibration
# batch's width, so a calibrated model would run at that width only: int8 takes dynamic scales.
# A block's own matmuls are the attention's query x key and weights x value (its dense layers are
# submodules): qwix would quantize them too, and the values' scale, taken over the keys, would span
# the padded ones, so padding would change a row's logits. They stay float32 (int8_float_modules).
# The position table has max_positions rows; past them encode reads NaN (max_tokens_key).
_FIELDS = dict(
    num_layers=(4, (1, None)),
    num_heads=(4, (1, None)),  # Must divide model.embed_dim (the hidden size).
    intermediate_dim=(1024, (1, None)),  # The MLP's width (BERT: 4 x hidden).
    max_positions=(512, (1, None)),  # Rows of the position table: at least data.max_len.
    type_vocab_size=(2, (1, None)),  # BERT's segments; single texts use type 0.
    layer_norm_eps=(1e-12, (0.0, None, 'neither')),  # BERT's 1e-12; RoBERTa's 1e-5.
    pre_ln=False,  # False: post-LN (BERT); True: pre-LN with a final LayerNorm (stabler deep or at high rates).
    gelu='exact',  # exact (erf; BERT's, Hugging Face's "gelu") | tanh (the approximation, "gelu_new").
    pooling='cls',  # cls: the state at the first position (there is no [CLS] token) | mean: over real tokens.
    pooler=True,  # BERT's pooler: dense + tanh on the pooled vector before the head's dropout.
    pooler_activation='tanh',  # The pooler's: tanh (BERT, RoBERTa) | relu (DistilBERT's pre_classifier).
    # jax.nn.dot_product_attention's implementation: xla (everywhere), cudnn (NVIDIA GPUs, with
    # dtype=bfloat16), '' (JAX's choice). Attention dropout > 0 trains with XLA ops whatever this says.
    attention='xla',
    attention_dropout=(0.1, (0.0, 1.0, 'low')),  # On the attention weights (BERT: 0.1).
    # bfloat16: the dense layers and attention run on bf16 operands with f32 sums; the params,
    # the residual stream, LayerNorms and softmax stay f32.
    dtype='float32',
    # '' or a jax.checkpoint_policies name: each block is rematerialized in the backward pass,
    # keeping what the policy saves ('nothing_saveable': only the blocks' inputs).
    remat='',
    init_std=(0.02, (0.0, None, 'neither')),  # Truncated-normal std of the weights (BERT's initializer_range).
)
_CHOICES = {'gelu': tuple(GELUS), 'pooling': POOLINGS, 'pooler_activation': tuple(POOLER_ACTIVATIONS),
            'attention': ATTENTIONS, 'dtype': tuple(_DTYPES),
            'remat': REMAT_POLICIES}
SPEC = ModelSpec(
    name='transformer', kind=CLASSIFIER, section='transformer', module=TransformerClassifier, build=_build,
    training_flops=_training_flops, static_activation_scales=False, int8_float_modules=r'layers_\d+',
    max_tokens_key='max_positions', fields=_FIELDS, choices=_CHOICES,
    description='BERT-style Transformer encoder (self-attention over the tokens), classified from a pooled state')
# The same module and section pretrained as BERT's masked LM: a classifier config naming
# model.name='transformer' with the same model.transformer starts from it leaf for leaf (init.checkpoint),
# taking every parameter but the MLM head. No training_flops: the classifier's count leaves out the
# decoder over the vocabulary at each masked position, a sizeable share of a pretraining step.
MLM_SPEC = ModelSpec(
    name='transformer_mlm', kind=MASKED_LM, section='transformer', module=TransformerClassifier, build=_build,
    static_activation_scales=False, max_tokens_key='max_positions', fields=_FIELDS, choices=_CHOICES,
    description='BERT-style Transformer encoder pretrained as a masked language model (a tied decoder over the '
                'vocabulary at the masked positions)')
