"""Differential privacy for classifiers: DP-SGD (Abadi et al. 2016), its accountant, its audit.

- accounting: epsilon for (sampling rate, noise, steps, delta), the noise for a target epsilon;
- sampling: Poisson-sampled batches in a fixed padded shape;
- clipping: per-example clipped gradient sums and the noisy mean, inside the one train step;
- audit: membership inference and canary exposure, the evidence that epsilon means something.

`Plan` is what a run's dp.* section resolves to once the training set's size is known; the
experiment builds the step's PrivateGradients and the batches from it, and `EpsilonLog` reports
the epsilon spent as training goes (docs/guides/privacy.md).
"""
import dataclasses
import logging
import math

ACCOUNTANTS = ('pld', 'rdp')


@dataclasses.dataclass(frozen=True)
class Plan:
  """A DP-SGD run's privacy: its mechanism, steps, delta and accountant."""
  mechanism: 'accounting.Mechanism'
  steps: int
  delta: float
  accountant: str
  clip_norm: float
  target_epsilon: float = 0.0  # 0: the noise was set, not calibrated.

  def epsilon(self, step: int) -> float:
    from bigjax.privacy import accounting  # pylint: disable=g-import-not-at-top
    return accounting.epsilon(self.mechanism, step, self.delta, self.accountant)

  def record(self, step: int) -> dict:
    """What config.json and results.json say of the privacy spent by `step` steps."""
    m = self.mechanism
    return {'epsilon': self.epsilon(step), 'delta': self.delta, 'steps': step, 'accountant': self.accountant,
            'noise_multiplier': m.noise_multiplier, 'clip_norm': self.clip_norm, 'sampling_rate': m.sampling_rate,
            'expected_batch': m.expected_batch, 'padded_rows': m.max_rows, 'dataset_size': m.dataset_size,
            'target_epsilon': self.target_epsilon or None,
            'truncation_probability': m.overflow_probability(step)}


def make_plan(dp, dataset_size: int, expected_batch: int, total_steps: int, rows_multiple: int = 1) -> Plan:
  """The Plan of config section `dp` for a training set of dataset_size examples; a ConfigError
  (one line, naming the key) where the accountant cannot honour it."""
  from bigjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from bigjax.privacy import accounting  # pylint: disable=g-import-not-at-top
  n = dataset_size
  delta = dp.delta or 1.0 / n ** 1.1
  if delta >= 1.0 / n:
    raise ConfigError(f'dp.delta={dp.delta:g} is not below 1/n = {1.0 / n:.3g} for the n={n} training examples: such a '
                      'delta allows publishing an example outright; use 0 (1/n^1.1) or a smaller delta')
  if expected_batch > n:
    raise ConfigError(f'train.batch_size={expected_batch} (the expected Poisson batch) is more than the {n} training '
                      'examples')
  q = expected_batch / n
  overflow = 1e-3 if dp.accountant == 'pld' else delta / 10
  rows = dp.max_rows or accounting.max_rows(n, q, total_steps, overflow)
  rows = min(-(-rows // rows_multiple) * rows_multiple, -(-n // rows_multiple) * rows_multiple)
  mechanism = accounting.Mechanism(n, q, rows, dp.noise_multiplier)
  try:
    if dp.target_epsilon:
      sigma = accounting.calibrate_noise(dp.target_epsilon, mechanism, total_steps, delta, dp.accountant)
      mechanism = dataclasses.replace(mechanism, noise_multiplier=sigma)
    plan = Plan(mechanism, total_steps, delta, dp.accountant, dp.clip_norm, dp.target_epsilon)
    final = plan.epsilon(total_steps)
  except accounting.AccountingError as e:
    raise ConfigError(f'dp: {e}') from None
  logging.info('DP-SGD: %d steps, each Poisson-sampling the %d training examples at rate q=%.5f (%.1f expected, at '
               'most %d rows), clipping each gradient to norm %g, noise multiplier %.4f%s: epsilon %.3f at delta %.3g '
               '(%s accountant) by the last step', total_steps, n, q, mechanism.expected_batch, rows, dp.clip_norm,
               mechanism.noise_multiplier, f' (calibrated to epsilon {dp.target_epsilon:g})' if dp.target_epsilon
               else '', final, delta, dp.accountant)
  if not math.isfinite(final):
    logging.warning('DP-SGD without noise: epsilon is infinite')
  return plan


@dataclasses.dataclass
class EpsilonLog:
  """A loop hook: at each log window, the epsilon spent so far and the share of clipped gradients
  ('privacy' records in metrics.jsonl and TensorBoard); at the end, the run's privacy record."""
  plan: Plan
  writer: 'object'

  def __call__(self, window) -> None:
    examples = max(float(window.totals.get('examples', 0.0)), 1.0)
    self.writer.write(window.step, 'privacy', {'epsilon': self.plan.epsilon(window.step),
                                               'clipped_fraction': float(window.totals.get('clipped', 0.0)) / examples})

  def results(self, step: int) -> dict:
    return {'privacy': self.plan.record(step)}


def run_record(config, plan: Plan, examples: int) -> dict:
  """config.json's privacy: the plan at its last step, the tokenizer's source, what is protected."""
  from bigjax import files  # pylint: disable=g-import-not-at-top
  from bigjax.privacy import audit as audit_lib  # pylint: disable=g-import-not-at-top
  if config.init.get('pretrained'):
    tokenizer = f'the pretrained model\'s ({files.absolute(config.init.pretrained)})'
  elif config.data.get('tokenizer_file'):
    tokenizer = f'public ({files.absolute(config.data.tokenizer_file)})'
  else:
    tokenizer = f'init.checkpoint\'s ({files.absolute(config.init.checkpoint)}), declared public by dp.public_init'
  canaries = ' (the audit\'s canaries included)' if audit_lib.settings(config) else ''
  return dict(plan.record(plan.steps), tokenizer=tokenizer, public_init=bool(config.dp.public_init),
              private=f'the {examples} training examples{canaries}; the dev examples that choose the kept '
                      'checkpoint and the test examples are not protected')
