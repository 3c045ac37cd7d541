"""Token attributions of a classifier seen as ModelFns: integrated gradients, gradient × input,
leave-one-token-out occlusion.

Every method differentiates (or perturbs) the vectors the model reads, `fns.embed`'s
output float32[B, S, E], and attributes one output per row (by default the log-odds of
a target class; or its logit or probability). Scores per embedding slot are then folded onto tokens
with `fns.slot_tokens`: the identity for the LSTM and the plain MLP, half of each of its
two tokens for a hashed-bigram slot of the MLP. Each slot row of slot_tokens sums to 1, so
folding keeps the total, and integrated gradients' completeness holds per token too.

Nothing here masks padding: the models are padding-invariant (their outputs do not depend
on slots past a row's length, and the gradient there is exactly zero), so padded positions
come out as exact zeros by themselves, which the tests check rather than enforce.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bigjax.errors import ConfigError
from bigjax.types import ModelFns

BASELINES = ('zeros', 'padding')  # The embedding every slot moves away from: zero vectors, or padding's.
# What is attributed, for the target class y: its log-odds, logit_y - logsumexp(the other logits)
# (log p_y / (1 - p_y); for two classes the logit difference), its logit, or its probability.
OUTPUTS = ('log_odds', 'logit', 'probability')
# Quadrature of the path integral (docs/results/attributions.md).
RULES = ('gauss_legendre', 'midpoint', 'adaptive')
# The adaptive rule: panels of this many Gauss-Legendre points, starting from this many equal panels.
ADAPTIVE_NODES = 2
ADAPTIVE_START = 8


class IGResult(NamedTuple):
  """Integrated gradients for a batch; all float32."""
  attributions: jax.Array  # [B, T]: per token; sums (over a row) to f_x - f_baseline up to `error`.
  f_x: jax.Array  # [B]: the attributed output at the input.
  f_baseline: jax.Array  # [B]: the attributed output at the baseline.
  error: jax.Array  # [B]: completeness error |sum(attributions) - (f_x - f_baseline)|.


def check_settings(*, steps: int = 64, baseline: str = 'zeros', output: str = 'log_odds',
                   rule: str = 'gauss_legendre', chunk: int = 16) -> None:
  """Raises ConfigError for a setting no method can use (before anything is compiled)."""
  if baseline not in BASELINES:
    raise ConfigError(f'attribution baseline {baseline!r} is unknown; use one of {", ".join(BASELINES)}')
  if output not in OUTPUTS:
    raise ConfigError(f'attributed output {output!r} is unknown; use one of {", ".join(OUTPUTS)}')
  if rule not in RULES:
    raise ConfigError(f'integration rule {rule!r} is unknown; use one of {", ".join(RULES)}')
  if not 1 <= steps <= 4096:
    raise ConfigError(f'integrated-gradients steps={steps} must be between 1 and 4096 (64 is the usual)')
  if rule == 'adaptive' and steps % ADAPTIVE_NODES:
    raise ConfigError(f'the adaptive rule places its points in panels of {ADAPTIVE_NODES}: steps={steps} must be '
                      'a multiple of that')
  if chunk < 1:
    raise ConfigError(f'chunk={chunk} (interpolation points computed at once per text) must be at least 1')


def path_points(steps: int, rule: str = 'gauss_legendre') -> tuple[np.ndarray, np.ndarray]:
  """(alphas, weights), float64[steps] each: where on the straight path to evaluate the gradient,
  and how much each evaluation counts (the weights sum to 1).

  gauss_legendre (the default): exact for polynomials up to degree 2·steps - 1; on an
  LSTM's smooth but strongly curved path, 64 points leave a completeness error of ~1e-7
  where the midpoint rule leaves ~5 % (docs/results/attributions.md). midpoint: alphas
  (k + 1/2) / steps with equal weights, the Riemann sum most implementations use (error
  falling as 1/steps² on a smooth path). A ReLU MLP's path is only piecewise linear: both
  rules then err by up to a kink's jump times the spacing of their points, and
  Gauss-Legendre, its points sparse mid-path, is no longer far ahead.
  """
  if rule == 'midpoint':
    return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
  nodes, weights = np.polynomial.legendre.leggauss(steps)
  return (nodes + 1.0) / 2.0, weights / 2.0


def attributed(logits, targets, output: str):
  """float32[B]: the output being explained, per row."""
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # Softmax in f32 under bf16 models.
  if output == 'probability':
    logits = jax.nn.softmax(logits, axis=-1)
  mine = jnp.take_along_axis(logits, targets[:, None].astype(jnp.int32), axis=1)[:, 0]
  if output != 'log_odds':
    return mine
  target = jnp.arange(logits.shape[1])[None, :] == targets[:, None]
  return mine - jax.nn.logsumexp(jnp.where(target, -jnp.inf, logits), axis=1)


def baseline_embeddings(fns: ModelFns, params, token_ids, padding):
  """float32[B, S, E]: zero vectors, or (padding true) the embedding of an all-padding row.

  `padding` may be traced: one compiled program serves both baselines.
  """
  return jnp.where(padding, fns.embed(params, jnp.zeros_like(token_ids)), 0.0)


def _fold(fns: ModelFns, slot_scores, width: int):
  """float32[B, S] per slot -> float32[B, T] per token."""
  return slot_scores @ fns.slot_tokens(width)


def _chunks(values, chunk: int):
  """[..., steps] -> [steps / chunk, chunk, ...], padded with zeros (weight 0) to whole chunks."""
  steps = values.shape[-1]
  chunk = min(chunk, steps)
  padded = -(-steps // chunk) * chunk
  values = jnp.pad(values, [(0, 0)] * (values.ndim - 1) + [(0, padded - steps)])
  return jnp.moveaxis(values.reshape(values.shape[:-1] + (-1, chunk)), (-2, -1), (0, 1))


def chunked_path(steps: int, rule: str, chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """path_points as float32[steps / chunk, chunk, 1] arrays (the same points for every row),
  padded to whole chunks with weight 0.

  Inputs, not constants, of the compiled program: any fixed rule, and any step count with
  the same number of chunks, reuse one compilation.
  """
  alphas, weights = path_points(steps, rule)
  return tuple(np.asarray(_chunks(np.asarray(v, np.float32)[None], chunk)) for v in (alphas, weights))


def _path_values(fns: ModelFns, params, x0, diff, lengths, targets, alphas, *, output: str):
  """(f, df/dα), float32[B, M] each, at alphas float32[B, M] on each row's path x0 + α·diff.

  One forward-mode pass over M·B rows: the derivative along the path costs about a
  forward pass, not a gradient.
  """
  batch, m = alphas.shape
  rows = (x0[None] + alphas.T[:, :, None, None] * diff[None]).reshape((m * batch,) + x0.shape[1:])
  tangent = jnp.broadcast_to(diff[None], (m,) + diff.shape).reshape(rows.shape)
  f = lambda e: attributed(fns.logits_from_embeddings(params, e, jnp.tile(lengths, m)), jnp.tile(targets, m),
                           output)
  value, slope = jax.jvp(f, (rows,), (tangent,))
  return value.reshape(m, batch).T, slope.reshape(m, batch).T


def adaptive_path(fns: ModelFns, params, x0, diff, lengths, targets, *, steps: int, output: str):
  """(alphas, weights), float32[B, steps] each: quadrature points placed per row where its path needs them.

  The path [0, 1] is cut into panels of ADAPTIVE_NODES Gauss-Legendre points. Each panel's
  error is known exactly, without gradients: its quadrature of df/dα (forward mode)
  against f(end) - f(start) (forward passes). Starting from ADAPTIVE_START equal panels,
  the panel with the largest error is halved until there are steps / ADAPTIVE_NODES. A
  near-step of f 1e-5 wide (a bistable LSTM near the zero input, docs/results/attributions.md)
  is found by ~17 halvings where no fixed rule with 64 points can see it. The search
  costs (2·ADAPTIVE_NODES + 1) forward-mode evaluations per halving; integrated
  gradients then takes its `steps` gradients at the points found.
  """
  batch = x0.shape[0]
  nodes, node_weights = (jnp.asarray(v, jnp.float32) for v in path_points(ADAPTIVE_NODES))
  panels = steps // ADAPTIVE_NODES
  start = min(ADAPTIVE_START, panels)
  values = functools.partial(_path_values, fns, params, x0, diff, lengths, targets, output=output)
  rows = jnp.arange(batch)

  def quadrature(left, right):  # [B, n] panels -> [B, n], their quadrature of df/dα
    n = left.shape[1]
    _, slope = values((left[..., None] + (right - left)[..., None] * nodes).reshape(batch, -1))
    return (right - left) * (slope.reshape(batch, n, ADAPTIVE_NODES) @ node_weights)

  edges = jnp.broadcast_to(jnp.linspace(0.0, 1.0, start + 1, dtype=jnp.float32), (batch, start + 1))
  f_edges, _ = values(edges)
  empty = jnp.zeros((batch, panels - start), jnp.float32)
  widen = lambda v: jnp.concatenate([v, empty], axis=1)
  state = (widen(edges[:, :-1]), widen(edges[:, 1:]), widen(f_edges[:, :-1]), widen(f_edges[:, 1:]),
           widen(quadrature(edges[:, :-1], edges[:, 1:])))

  def halve(n, state):
    left, right, f_left, f_right, quad = state
    error = jnp.where(jnp.arange(panels) < n, jnp.abs(quad - (f_right - f_left)), -1.0)
    j = jnp.argmax(error, axis=1)
    a, b, fa, fb = (v[rows, j] for v in (left, right, f_left, f_right))
    mid = (a + b) / 2
    # f at the cut, and df/dα at both halves' nodes, in one call.
    f, slope = values(jnp.concatenate([mid[:, None], a[:, None] + (mid - a)[:, None] * nodes,
                                       mid[:, None] + (b - mid)[:, None] * nodes], axis=1))
    q_low = (mid - a) * (slope[:, 1:1 + ADAPTIVE_NODES] @ node_weights)
    q_high = (b - mid) * (slope[:, 1 + ADAPTIVE_NODES:] @ node_weights)
    f_mid = f[:, 0]
    # The lower half stays in panel j, the upper half becomes panel n.
    return (left.at[rows, n].set(mid), right.at[rows, j].set(mid).at[rows, n].set(b),
            f_left.at[rows, n].set(f_mid), f_right.at[rows, j].set(f_mid).at[rows, n].set(fb),
            quad.at[rows, j].set(q_low).at[rows, n].set(q_high))

  left, right, *_ = jax.lax.fori_loop(start, panels, halve, state)
  alphas = left[..., None] + (right - left)[..., None] * nodes
  weights = (right - left)[..., None] * node_weights
  return alphas.reshape(batch, steps), weights.reshape(batch, steps)


def _integrated_gradients(fns: ModelFns, params, token_ids, lengths, targets, alphas, weights, padding, *,
                          output: str, adaptive_steps: int = 0, chunk: int = 16) -> IGResult:
  """alphas, weights: float32[steps / chunk, chunk, 1 or B] (chunked_path), or, with
  adaptive_steps, ignored and found per row by adaptive_path."""
  batch, width = token_ids.shape
  x = fns.embed(params, token_ids)
  x0 = baseline_embeddings(fns, params, token_ids, padding)
  diff = x - x0
  if adaptive_steps:
    alphas, weights = (_chunks(v, chunk) for v in adaptive_path(fns, params, x0, diff, lengths, targets,
                                                                steps=adaptive_steps, output=output))
  chunk = alphas.shape[1]
  lengths_c, targets_c = jnp.tile(lengths, chunk), jnp.tile(targets, chunk)

  def weighted_output(points, w):
    # Rows never interact (no batch statistics), so the gradient of this sum is, for each
    # point, its own weighted gradient.
    f = attributed(fns.logits_from_embeddings(params, points, lengths_c), targets_c, output)
    return jnp.sum(f * jnp.broadcast_to(w, (chunk, batch)).reshape(-1))

  def body(total, chunk_points):
    a, w = chunk_points
    points = x0[None] + a[:, :, None, None] * diff[None]  # [chunk, B, S, E]
    grads = jax.grad(weighted_output)(points.reshape((chunk * batch,) + x.shape[1:]), w)
    return total + grads.reshape((chunk,) + x.shape).sum(0), None

  mean_grad, _ = jax.lax.scan(body, jnp.zeros_like(x), (alphas, weights))
  attributions = _fold(fns, jnp.sum(mean_grad * diff, axis=-1), width)
  f_x = attributed(fns.logits_from_embeddings(params, x, lengths), targets, output)
  f_0 = attributed(fns.logits_from_embeddings(params, x0, lengths), targets, output)
  error = jnp.abs(attributions.sum(-1) - (f_x - f_0))
  return IGResult(attributions, f_x, f_0, error)


def integrated_gradients(fns: ModelFns, params, token_ids, lengths, targets, *, steps: int = 64,
                         baseline: str = 'zeros', output: str = 'log_odds', rule: str = 'gauss_legendre',
                         chunk: int = 16) -> IGResult:
  """Integrated gradients (Sundararajan et al. 2017) of each row's target output w.r.t. its embeddings.

  attribution(slot s) = sum_e (x - x')_se · ∫_0^1 ∂f/∂x_se (x' + α (x - x')) dα, with the
  integral as a `rule` quadrature over `steps` points. The points of all rows are evaluated
  together, `chunk` points of each row at a time (chunk · B rows per model call, inside a
  scan: memory stays that of one such call).

  Args:
    token_ids: int32[B, T]; lengths: int32[B]; targets: int32[B], the class explained per row.
  """
  alphas, weights = _path_arguments(steps, rule, chunk)
  return _integrated_gradients(fns, params, token_ids, lengths, targets, alphas, weights, baseline == 'padding',
                               output=output, adaptive_steps=steps if rule == 'adaptive' else 0, chunk=chunk)


def _path_arguments(steps: int, rule: str, chunk: int):
  """The (alphas, weights) inputs of _integrated_gradients: a fixed rule's, or placeholders for the adaptive one."""
  if rule == 'adaptive':
    return np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32)
  return chunked_path(steps, rule, chunk)


def _gradient_x_input(fns: ModelFns, params, token_ids, lengths, targets, padding, *, output: str):
  x = fns.embed(params, token_ids)
  x0 = baseline_embeddings(fns, params, token_ids, padding)
  grads = jax.grad(lambda e: jnp.sum(attributed(fns.logits_from_embeddings(params, e, lengths), targets,
                                                 output)))(x)
  return _fold(fns, jnp.sum(grads * (x - x0), axis=-1), token_ids.shape[1])


def gradient_x_input(fns: ModelFns, params, token_ids, lengths, targets, *, baseline: str = 'zeros',
                     output: str = 'log_odds'):
  """float32[B, T]: sum_e ∂f/∂x_se · (x - x')_se at the input (x' = 0 gives the classic gradient × input).

  A first-order Taylor view: integrated gradients with one point, at the path's end.
  """
  return _gradient_x_input(fns, params, token_ids, lengths, targets, baseline == 'padding', output=output)


def _occlusion(fns: ModelFns, params, token_ids, lengths, targets, padding, *, output: str, chunk: int):
  batch, width = token_ids.shape
  x = fns.embed(params, token_ids)
  x0 = baseline_embeddings(fns, params, token_ids, padding)
  with jax.ensure_compile_time_eval():  # A constant of the width: numpy, even under jit.
    owned = np.asarray(fns.slot_tokens(width)) > 0  # [S, T]
  # Variant 0 is the input itself, the others occlude token t = variant - 1; the count is
  # padded to whole chunks with more copies of the input. f(x) is thus computed by the same
  # compiled body as every f(occluded x): where they read equal values the scores are
  # exactly 0, not a rounding difference between two differently fused programs.
  chunk = min(chunk, width + 1)
  count = -(-(width + 1) // chunk) * chunk
  which = np.concatenate([np.full(1, -1), np.arange(width), np.full(count - width - 1, -1)]).reshape(-1, chunk)
  masks = np.where((which >= 0)[..., None], owned.T[which], False)  # [chunks, chunk, S]: slots at the baseline.

  def outputs(mask):  # [chunk, S] -> [chunk, B]
    e = jnp.where(mask[:, None, :, None], x0[None], x[None]).reshape((-1,) + x.shape[1:])
    f = attributed(fns.logits_from_embeddings(params, e, jnp.tile(lengths, chunk)), jnp.tile(targets, chunk),
                    output)
    return f.reshape(chunk, batch)

  f = jax.lax.map(outputs, jnp.asarray(masks)).reshape(count, batch)
  return (f[0][None] - f[1:width + 1]).T


def occlusion(fns: ModelFns, params, token_ids, lengths, targets, *, baseline: str = 'zeros',
              output: str = 'log_odds', chunk: int = 16):
  """float32[B, T]: f(x) - f(x with token t occluded), for every token t.

  Occluding a token sets every slot it owns (slot_tokens > 0: its own, and for the
  bigram MLP both pairs it is part of) to the baseline embedding, keeping the length and
  the other positions as they are: a token the model ignores scores exactly 0, and a
  padded position too. (ERASER's faithfulness measures, by contrast, delete tokens.)
  `chunk` variants are evaluated at once (chunk · B rows per model call).
  """
  return _occlusion(fns, params, token_ids, lengths, targets, baseline == 'padding', output=output, chunk=chunk)


def probabilities(fns: ModelFns, params, token_ids, lengths):
  """float32[B, K]: the model's class probabilities (deterministic)."""
  logits = fns.logits(params, token_ids, lengths)
  return jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)


METHODS = ('integrated_gradients', 'gradient_x_input', 'occlusion')


@functools.lru_cache(maxsize=16)
def _compiled(fns: ModelFns, output: str, chunk: int) -> dict:
  """The jitted methods of one model: Attributors of the same model (other parameters, baseline,
  rule or step count) share them and their compilations."""
  return {
      'integrated_gradients': jax.jit(functools.partial(_integrated_gradients, fns, output=output, chunk=chunk),
                                      static_argnames='adaptive_steps'),
      'gradient_x_input': jax.jit(functools.partial(_gradient_x_input, fns, output=output)),
      'occlusion': jax.jit(functools.partial(_occlusion, fns, output=output, chunk=chunk)),
      'probabilities': jax.jit(functools.partial(probabilities, fns)),
  }


class Attributor:
  """The methods above jit-compiled for one model, its parameters and one set of settings.

  Each call compiles once per input shape [B, T]; callers pad to a few widths (the run's
  length buckets) and a fixed number of rows.
  """

  def __init__(self, fns: ModelFns, params, *, steps: int = 64, baseline: str = 'zeros', output: str = 'log_odds',
               rule: str = 'gauss_legendre', chunk: int = 16):
    check_settings(steps=steps, baseline=baseline, output=output, rule=rule, chunk=chunk)
    if fns.embed is None or fns.logits_from_embeddings is None or fns.slot_tokens is None:
      raise ConfigError('this model has no embed/logits_from_embeddings/slot_tokens functions (a language model?); '
                        'attributions need a classifier')
    self.fns, self.params = fns, params
    self.settings = dict(steps=steps, baseline=baseline, output=output, rule=rule, chunk=chunk)
    self._path = _path_arguments(steps, rule, chunk)
    self._adaptive_steps = steps if rule == 'adaptive' else 0
    self._padding = np.asarray(baseline == 'padding')
    self._fns = _compiled(fns, output, chunk)

  def probabilities(self, token_ids, lengths) -> np.ndarray:
    return np.asarray(self._fns['probabilities'](self.params, token_ids, lengths))

  def integrated_gradients(self, token_ids, lengths, targets) -> IGResult:
    result = self._fns['integrated_gradients'](self.params, token_ids, lengths, targets, *self._path, self._padding,
                                               adaptive_steps=self._adaptive_steps)
    return IGResult(*map(np.asarray, result))

  def attribute(self, method: str, token_ids, lengths, targets) -> np.ndarray:
    """float32[B, T] of one method (integrated gradients: its attributions alone)."""
    if method not in METHODS:
      raise ConfigError(f'attribution method {method!r} is unknown; use one of {", ".join(METHODS)}')
    if method == 'integrated_gradients':
      return self.integrated_gradients(token_ids, lengths, targets).attributions
    return np.asarray(self._fns[method](self.params, token_ids, lengths, targets, self._padding))
