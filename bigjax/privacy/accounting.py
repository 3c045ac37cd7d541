"""The privacy spent by DP-SGD, from Google's dp_accounting: epsilon at a delta for (sampling
rate, noise multiplier, steps), and the noise multiplier that spends a target epsilon.

Each step Poisson-samples every training example with probability q, keeps at most
`max_rows` of them (a random subset when more were drawn: the padded batch has a fixed
shape), and adds Gaussian noise of standard deviation sigma * C to the sum of the examples'
gradients clipped to norm C. The accountant's whole state is the number of steps taken, so a
resumed run's epsilon is the uninterrupted run's.

- 'pld' (the default): the privacy loss distribution of exactly that mechanism, truncation
  included (dp_accounting's TruncatedSubsampledGaussianDpEvent; Feldman & Shenfeld's
  analysis, arXiv 2508.15089); the tightest bound dp_accounting computes.
- 'rdp': Renyi DP of the Poisson-sampled Gaussian (the accountant of Abadi et al. and
  Opacus's default), which knows no truncation: delta pays for it instead. The chance that
  any step drew more than max_rows examples (a binomial tail, times the steps) is added to
  the delta the Renyi bound is converted at.

Both count neighbouring datasets as one example added or removed.
"""
import dataclasses
import functools
import math

import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
from scipy import stats

from bigjax.privacy import ACCOUNTANTS

# The PLD's discretization: finer is tighter and slower (1e-3: under 0.2 s for 10,000 steps;
# epsilon differs from 1e-4's by under 0.1 % at the settings of docs/results/privacy.md).
PLD_DISCRETIZATION = 1e-3
# The noise multipliers calibrate_noise searches between. Below MIN_NOISE epsilon is in the
# hundreds, and the PLD of a smaller noise outgrows memory (sigma = 0.001 took 24 GiB): refused.
# Above MAX_NOISE the noise drowns any batch this machine trains (its standard deviation is 100
# clipped gradients' norm) and the PLD's discretization rounds epsilon to 0.
MIN_NOISE, MAX_NOISE = 0.2, 100.0


class AccountingError(ValueError):
  """Settings the accountant cannot honour (a delta too large, an epsilon out of reach)."""


@dataclasses.dataclass(frozen=True)
class Mechanism:
  """What a DP-SGD run does to its training set at each step."""
  dataset_size: int  # n: the private training examples.
  sampling_rate: float  # q: each example's chance to be in a step's batch.
  max_rows: int  # The padded batch: a step never uses more examples than this.
  noise_multiplier: float  # sigma: the noise's standard deviation over the clipping norm.

  @property
  def expected_batch(self) -> float:
    return self.dataset_size * self.sampling_rate

  def overflow_probability(self, steps: int) -> float:
    """The chance that any of `steps` steps drew more than max_rows examples (union bound)."""
    return min(1.0, steps * float(stats.binom.sf(self.max_rows, self.dataset_size, self.sampling_rate)))

  def event(self, steps: int, accountant: str) -> dp_accounting.DpEvent:
    if accountant == 'pld':
      one = dp_accounting.TruncatedSubsampledGaussianDpEvent(
          self.dataset_size, self.sampling_rate, self.max_rows, self.noise_multiplier)
    else:
      one = dp_accounting.PoissonSampledDpEvent(self.sampling_rate,
                                                dp_accounting.GaussianDpEvent(self.noise_multiplier))
    return dp_accounting.SelfComposedDpEvent(one, steps)


def _accountant(name: str) -> dp_accounting.PrivacyAccountant:
  if name == 'pld':
    return pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
  if name == 'rdp':
    return rdp.RdpAccountant()
  raise AccountingError(f'unknown accountant {name!r}; known: {", ".join(ACCOUNTANTS)}')


def _conversion_delta(mechanism: Mechanism, steps: int, delta: float, accountant: str) -> float:
  """The delta the accountant converts at: rdp gives up the overflow's share of it."""
  if accountant != 'rdp':
    return delta
  left = delta - mechanism.overflow_probability(steps)
  if left <= 0:
    raise AccountingError(
        f'{steps} steps may draw more than {mechanism.max_rows} examples with probability '
        f'{mechanism.overflow_probability(steps):.2g}, not below delta={delta:g}: the rdp accountant cannot '
        'count that; use the pld accountant, which accounts for the truncation, or more rows')
  return left


@functools.lru_cache(maxsize=256)
def epsilon(mechanism: Mechanism, steps: int, delta: float, accountant: str = 'pld') -> float:
  """Epsilon spent after `steps` steps, at `delta`."""
  if steps <= 0:
    return 0.0
  if mechanism.noise_multiplier <= 0:
    return math.inf
  if mechanism.noise_multiplier < MIN_NOISE:
    raise AccountingError(f'noise multiplier {mechanism.noise_multiplier:g} is below {MIN_NOISE:g}: its epsilon is in '
                          'the hundreds (no privacy to speak of), and too costly to compute')
  conversion_delta = _conversion_delta(mechanism, steps, delta, accountant)
  tally = _accountant(accountant)
  tally.compose(mechanism.event(steps, accountant))
  return float(tally.get_epsilon(conversion_delta))


def calibrate_noise(target_epsilon: float, mechanism: Mechanism, steps: int, delta: float,
                    accountant: str = 'pld') -> float:
  """The smallest noise multiplier whose `steps` steps spend at most target_epsilon at delta
  (mechanism's own noise_multiplier is ignored)."""
  at = lambda sigma: dataclasses.replace(mechanism, noise_multiplier=float(sigma))
  if epsilon(at(MAX_NOISE), steps, delta, accountant) > target_epsilon:
    raise AccountingError(
        f'epsilon={target_epsilon:g} at delta={delta:g} needs a noise multiplier above {MAX_NOISE:g} for {steps} '
        f'steps at sampling rate {mechanism.sampling_rate:.4g}: allow a larger epsilon, or take fewer steps or '
        'smaller batches')
  if epsilon(at(MIN_NOISE), steps, delta, accountant) <= target_epsilon:
    raise AccountingError(f'epsilon={target_epsilon:g} allows a noise multiplier below {MIN_NOISE:g}, where epsilon is '
                          'not computed; set a smaller target epsilon, or dp.noise_multiplier')
  conversion_delta = _conversion_delta(mechanism, steps, delta, accountant)
  sigma = dp_accounting.calibrate_dp_mechanism(
      lambda: _accountant(accountant), lambda sigma: at(sigma).event(steps, accountant), target_epsilon,
      conversion_delta, dp_accounting.ExplicitBracketInterval(MIN_NOISE, MAX_NOISE), tol=1e-4)
  # Brent's method ends within tol of the boundary, on either side: step up until within budget.
  while epsilon(at(sigma), steps, delta, accountant) > target_epsilon:
    sigma += 1e-4
  return float(sigma)


def max_rows(dataset_size: int, sampling_rate: float, steps: int, overflow: float) -> int:
  """The fewest padded rows whose chance of ever being exceeded in `steps` steps is at most `overflow`."""
  rows = int(stats.binom.isf(overflow / max(steps, 1), dataset_size, sampling_rate))
  return min(max(rows, 1), dataset_size)
