"""bigjax.draws: dropout masks and Gaussian noise from every bit of the Threefry hash, with the
statistics of jax.random's, the same values on any mesh, and fewer hashes."""
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bigjax import draws
from bigjax.models.common import Dropout

KEY = jax.random.PRNGKey(7)


def _hash_sizes(fn, *args) -> list[int]:
  """The output size of every Threefry hash in fn's program."""
  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'threefry2x32':
        found.append(int(np.prod(eqn.outvars[0].aval.shape)))
      for value in eqn.params.values():  # Nested programs (jit's, for one).
        inner = getattr(value, 'jaxpr', value)
        if hasattr(inner, 'eqns'):
          walk(inner)

  walk(jaxpr)
  return found


def test_normal_is_standard_normal():
  values = np.asarray(draws.normal(KEY, (1024, 1024)), np.float64).ravel()
  n = values.size
  assert abs(values.mean()) < 5 / np.sqrt(n)
  assert abs(values.var() - 1.0) < 5 * np.sqrt(2.0 / n)
  assert stats.kstest(values, 'norm').pvalue > 1e-3
  # The tails, where a coarse uniform would show: P(|x| > 3) = 0.0027, P(|x| > 4) = 6.3e-5.
  for bound in (3.0, 4.0):
    expected = 2 * stats.norm.sf(bound)
    assert abs(np.mean(np.abs(values) > bound) - expected) < 5 * np.sqrt(expected / n)
  # Neighbours (one hash's two words, and the next hash's) are uncorrelated.
  for lag in (1, 2):
    assert abs(np.corrcoef(values[:-lag], values[lag:])[0, 1]) < 5 / np.sqrt(n)


def test_normal_draws_two_a_hash_and_dropout_four():
  assert _hash_sizes(lambda k: draws.normal(k, (3, 1001)), KEY) == [3 * 501]
  assert _hash_sizes(lambda k: draws.dropout_mask(k, 0.1, (2, 4, 10, 10))[0], KEY) == [2 * 4 * 10 * 3]


@pytest.mark.parametrize('rate', [0.1, 0.5])
def test_dropout_mask_keeps_its_rate_independently_and_the_scaled_mean_is_one(rate):
  keep, scale = draws.dropout_mask(KEY, rate, (512, 2048))
  keep = np.asarray(keep).ravel()
  n = keep.size
  assert abs(keep.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
  assert scale == pytest.approx(65536 / round((1 - rate) * 65536))
  assert abs((keep * scale).mean() - 1.0) < 5 * scale * np.sqrt(rate * (1 - rate) / n)
  dropped = ~keep
  for lag in (1, 2, 3, 4, 2048):  # The same word's halves, the hash's other word, the next hash, the next row.
    both = np.mean(dropped[:-lag] & dropped[lag:])
    assert abs(both - rate**2) < 5 * np.sqrt(rate**2 * (1 - rate**2) / n), lag


def test_rates_at_the_ends():
  keep, scale = draws.dropout_mask(KEY, 1e-12, (64, 64))
  assert bool(keep.all()) and scale == 1.0
  keep, _ = draws.dropout_mask(KEY, 1.0 - 1e-9, (64, 64))
  assert float(keep.mean()) < 0.01


def test_draws_are_pure_functions_of_key_and_shape():
  first = draws.normal(KEY, (5, 7))
  np.testing.assert_array_equal(first, draws.normal(KEY, (5, 7)))
  np.testing.assert_array_equal(first, jax.jit(lambda k: draws.normal(k, (5, 7)))(KEY))
  assert not np.allclose(first, draws.normal(jax.random.fold_in(KEY, 1), (5, 7)))
  assert draws.normal(KEY, ()).shape == () and draws.dropout_mask(KEY, 0.5, ())[0].shape == ()
  # A typed Threefry key draws what its raw words draw; another kind of key goes through jax.random.
  np.testing.assert_array_equal(draws.normal(jax.random.wrap_key_data(KEY), (5, 7)), first)
  rbg = jax.random.key(0, impl='rbg')
  np.testing.assert_array_equal(draws.normal(rbg, (5, 7)), jax.random.normal(rbg, (5, 7)))


@pytest.mark.parametrize('spec', [P('a'), P(None, 'a'), P('a', 'b')])
def test_a_sharded_draw_equals_the_one_device_draw_and_needs_no_communication(spec):
  devices = np.array(jax.devices()[:8])
  if devices.size < 8:
    pytest.skip('needs 8 devices (tests/conftest.py asks XLA for 8 CPU devices)')
  mesh = jax.sharding.Mesh(devices.reshape(2, 4) if len(spec) == 2 else devices.reshape(8, 1), ('a', 'b'))
  shape = (16, 8, 40)
  sharding = NamedSharding(mesh, spec)
  kinds = {'normal': lambda k: draws.normal(k, shape),
           'dropout': lambda k: draws.dropout_mask(k, 0.3, shape)[0]}
  for name, draw in kinds.items():
    sharded = jax.jit(draw, out_shardings=sharding)
    np.testing.assert_array_equal(sharded(KEY), jax.jit(draw)(KEY), err_msg=name)
    text = sharded.lower(KEY).compile().as_text()
    for collective in ('all-gather', 'all-reduce', 'all-to-all', 'collective-permute'):
      assert collective not in text, (name, collective)


def test_dropout_module_is_flax_dropout_in_behaviour():
  x = jnp.ones((256, 512))
  rngs = {'dropout': KEY}
  assert Dropout(0.3).apply({}, x, deterministic=True) is x
  np.testing.assert_array_equal(Dropout(1.0).apply({}, x, deterministic=False, rngs=rngs), 0.0)
  dropped = np.asarray(Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs))
  assert set(np.unique(dropped)) == {0.0, np.float32(65536 / round(0.7 * 65536))}
  assert abs(dropped.mean() - 1.0) < 0.01
  assert dropped.dtype == np.float32
