"""Bad input is rejected before tracing, naming the argument; traced calls still run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import bhn

KEY = jax.random.PRNGKey(0)


def _elbo_problem(num_outputs=3):
  net = bhn.weightnorm_mlp(4, (6,), num_outputs)
  h = bhn.make_hypernet("gaussian", net.num_random)
  x = jax.random.normal(KEY, (10, 4))
  net_params, theta0 = net.init(jax.random.PRNGKey(3), x)
  return net, h, net_params, h.init(KEY, loc=theta0, scale=0.3), x


def _elbo(y, likelihood, num_outputs=3, **kw):
  net, h, net_params, hyper, x = _elbo_problem(num_outputs)
  return bhn.negative_elbo(KEY, hyper, net_params, x, y, primary=net, hypernet=h,
                           likelihood=likelihood, num_train=100, **kw)


# ------------------------------------------------------------------- select_top


def test_select_top_rejects_k_above_the_available_count():
  scores, available = jnp.array([0.1, 0.9, 0.5, 0.7]), jnp.array([True, False, False, False])
  with pytest.raises(ValueError, match=r"k must .*available"):
    bhn.select_top(scores, available, 2)
  np.testing.assert_array_equal(bhn.select_top(scores, available, 1), [0])
  # Traced `available` cannot be counted: the documented fill with unavailable points.
  traced = jax.jit(lambda a: bhn.select_top(scores, a, 2))(available)
  assert int(traced[0]) == 0 and traced.shape == (2,)


# ------------------------------------------------------------- class-label ranges


@pytest.mark.parametrize("bad", [3, -1])
def test_categorical_targets_must_be_classes_of_the_net(bad):
  lik = bhn.categorical_likelihood()
  y = (jnp.arange(10) % 3).at[4].set(bad)
  with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 3\)"):
    _elbo(y, lik)
  net = bhn.weightnorm_mlp(4, (6,), 3)
  x = jax.random.normal(KEY, (10, 4))
  mle = bhn.mle(net, lik)
  params = mle.init(KEY, x)
  with pytest.raises(ValueError, match=r"y must hold class labels"):
    mle.loss(params, KEY, x, y, 1.0, 10)
  # Traced labels are not inspected (the jitted loss still compiles and runs).
  good = jnp.arange(10) % 3
  loss = jax.jit(lambda t: _elbo(t, lik)[0])(good)
  np.testing.assert_allclose(loss, _elbo(good, lik)[0], rtol=1e-6)


@pytest.mark.parametrize("bad", [2, -1])
@pytest.mark.parametrize("metric", [bhn.nll, bhn.brier, bhn.expected_calibration_error])
def test_calibration_labels_must_be_classes(metric, bad):
  probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]], np.float32)
  with pytest.raises(ValueError, match=r"labels must hold class labels in \[0, 2\)"):
    metric(probs, np.array([0, bad, 1]))
  value = jax.jit(metric)(probs, np.array([0, 1, 1]))
  np.testing.assert_allclose(value, metric(probs, np.array([0, 1, 1])), rtol=1e-6)


# ---------------------------------------------------------------- target widths


def test_gaussian_targets_must_match_the_net_outputs():
  lik = bhn.gaussian_likelihood(0.5)
  with pytest.raises(ValueError, match=r"y must have shape \[10, 3\]"):
    _elbo(jnp.zeros((10, 1)), lik)
  loss, _ = _elbo(jnp.zeros((10, 3)), lik)
  assert np.isfinite(float(loss))


# ----------------------------------------------------------- sizes against the data


def test_make_task_init_checks_num_train_against_the_data():
  net = bhn.weightnorm_mlp(2, (4,), 2)
  task = bhn.make_task(bhn.mle(net, bhn.categorical_likelihood()), num_train=40, batch_size=5,
                       num_epochs=1, init_size=5)
  x, y = jnp.zeros((10, 2)), jnp.zeros(10, jnp.int32)
  with pytest.raises(ValueError, match=r"data\['x'\] must hold num_train = 40"):
    task.init(KEY, None, {"x": x, "y": y})
  with pytest.raises(ValueError, match=r"data\['y'\] must hold num_train = 40"):
    task.init(KEY, None, {"x": jnp.zeros((40, 2)), "y": y})
  task.init(KEY, None, {"x": jnp.zeros((40, 2)), "y": jnp.zeros(40, jnp.int32)})


@pytest.mark.parametrize("name", ["num_train", "batch_size", "num_epochs", "init_size"])
def test_make_task_refuses_bools_as_counts(name):
  net = bhn.weightnorm_mlp(2, (4,), 2)
  kw = dict(num_train=40, batch_size=5, num_epochs=1, init_size=5)
  good = kw[name]
  kw[name] = True
  with pytest.raises(ValueError, match=rf"{name} must be a positive int, got True"):
    bhn.make_task(bhn.mle(net, bhn.categorical_likelihood()), **kw)
  kw[name] = np.int64(good)  # numpy integers still count
  bhn.make_task(bhn.mle(net, bhn.categorical_likelihood()), **kw)


def test_subset_trainer_checks_count_and_indices():
  net = bhn.weightnorm_mlp(2, (4,), 2)
  method = bhn.mle(net, bhn.categorical_likelihood())
  train = bhn.subset_trainer(method, batch_size=4, num_epochs=1)
  x = jax.random.normal(KEY, (10, 2))
  y = jnp.arange(10) % 2
  params = method.init(KEY, x)
  indices = jnp.arange(6, dtype=jnp.int32)
  for count in (0, 7):
    with pytest.raises(ValueError, match=r"count must be in \[1, len\(indices\) = 6\]"):
      train(params, KEY, x, y, indices, count)
  for bad in (10, -1):
    with pytest.raises(ValueError, match=r"indices must hold positions in \[0, len\(x\) = 10\)"):
      train(params, KEY, x, y, indices.at[2].set(bad), 3)
  eager = train(params, KEY, x, y, indices, 6)
  jitted = jax.jit(train)(params, KEY, x, y, indices, 6)
  np.testing.assert_allclose(eager[1], jitted[1], rtol=1e-5)


# ------------------------------------------------------------- the KL weight, epochs


def test_kl_weight_must_be_a_nonnegative_scalar_and_epoch_nonnegative():
  lik = bhn.categorical_likelihood()
  y = jnp.arange(10) % 3
  with pytest.raises(ValueError, match="kl_weight must be >= 0"):
    _elbo(y, lik, kl_weight=-1.0)
  with pytest.raises(ValueError, match="kl_weight must be a scalar"):
    _elbo(y, lik, kl_weight=jnp.ones(2))
  traced = jax.jit(lambda w: _elbo(y, lik, kl_weight=w)[0])(0.3)
  np.testing.assert_allclose(traced, _elbo(y, lik, kl_weight=0.3)[0], rtol=1e-6)
  with pytest.raises(ValueError, match="epoch must be >= 0"):
    bhn.kl_annealing(-1, 10)
  with pytest.raises(ValueError, match="epoch must be >= 0"):
    bhn.kl_annealing(jnp.array([0, -2]), 10)
  np.testing.assert_allclose(jax.jit(lambda e: bhn.kl_annealing(e, 10))(3),
                             bhn.kl_annealing(3, 10))


def test_sample_outputs_checks_noise():
  net, h, net_params, hyper, x = _elbo_problem()
  theta = jnp.zeros((2, net.num_random))
  with pytest.raises(ValueError, match="noise must be one of"):
    bhn.sample_outputs(net, net_params, theta, x, noise="layer")
  assert bhn.sample_outputs(net, net_params, theta, x).shape == (2, 10, 3)
