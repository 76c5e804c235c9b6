"""Training methods behind one interface: BHN and the baselines of Section 7.4.

`Method(init, loss, sample_outputs)`:

* `init(key, x_init) -> params`;
* `loss(params, key, x, y, kl_weight, num_train) -> (loss, {"nll", "kl"})`;
* `sample_outputs(params, key, x, num_samples) -> [S, B, K]`: outputs under S posterior
  samples (a deterministic method returns S = 1).

Builders: `bhn` (Bayesian hypernet, Eq. 11.25), `mle` (maximum likelihood), `dropout`
(trained with dropout, deterministic prediction), `mc_dropout` (Gal and Ghahramani:
dropout masks at prediction time too), `bayes_by_backprop` (a factorial Gaussian over
every weight of a `dense_mlp`, the reparameterization trick). Registry `METHODS`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.bhn import objectives
from jaxthesis.bhn.hypernets import Hypernet, make_hypernet
from jaxthesis.bhn.objectives import Likelihood
from jaxthesis.bhn.primary import PrimaryNet, check_inputs
from jaxthesis.typing import Array, Params, PRNGKey


class Method(NamedTuple):
  """A training method as pure functions (see the module docstring)."""
  name: str
  init: Callable[[PRNGKey, Array], Params]
  loss: Callable[..., tuple[Array, dict[str, Array]]]
  sample_outputs: Callable[[Params, PRNGKey, Array, int], Array]
  primary: PrimaryNet
  likelihood: Likelihood
  bayesian: bool
  # `(params, key, num_samples) -> theta [S, D]`: posterior samples of the random vector
  # (hypernet methods only; None for point estimates and dropout).
  sample_theta: Optional[Callable[[Params, PRNGKey, int], Array]] = None


def _check_num_samples(num_samples) -> None:
  if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")


def bhn(primary: PrimaryNet, hypernet: Hypernet, likelihood: Likelihood, *,
        prior_precision: float = 1.0, num_samples: int = 1, noise: str = "minibatch",
        init_scale: float = 0.01, name: Optional[str] = None) -> Method:
  """A Bayesian hypernet: q(theta) = hypernet, trained on the negative ELBO (Eq. 11.25).

  Args:
    primary: the primary net (theta = its random vector, the weight-norm scales g).
    hypernet: a `Hypernet` with `num_dims == primary.num_random`.
    likelihood: the observation model.
    prior_precision: lambda > 0 of the prior N(0, I / lambda).
    num_samples: S samples per training step.
    noise: "minibatch" or "example" noise sharing.
    init_scale: initial posterior standard deviation around the primary net's initial
      theta (small: "limit the impact of noise at the beginning of training", 7.3.3).
    name: label (default "bhn-<hypernet>").
  """
  objectives.check_model(primary, hypernet)
  _checks.check_scalar("prior_precision", prior_precision, positive=True)
  _check_num_samples(num_samples)
  _checks.check_choice("noise", noise, objectives.NOISE_SHARING)
  _checks.check_scalar("init_scale", init_scale, positive=True)

  def init(key, x_init):
    net_key, hyper_key = jax.random.split(key)
    net_params, theta0 = primary.init(net_key, x_init)
    return {"net": net_params, "hyper": hypernet.init(hyper_key, loc=theta0, scale=init_scale)}

  def loss(params, key, x, y, kl_weight, num_train):
    return objectives.negative_elbo(
        key, params["hyper"], params["net"], x, y, primary=primary, hypernet=hypernet,
        likelihood=likelihood, num_train=num_train, kl_weight=kl_weight,
        prior_precision=prior_precision, num_samples=num_samples, noise=noise)

  def sample_outputs(params, key, x, num_samples):
    check_inputs(primary, x)
    _check_num_samples(num_samples)
    theta, _ = hypernet.sample_and_log_prob(params["hyper"], key, (num_samples,))
    return objectives.sample_outputs(primary, params["net"], theta, x)

  def sample_theta(params, key, num_samples):
    _check_num_samples(num_samples)
    return hypernet.sample_and_log_prob(params["hyper"], key, (num_samples,))[0]

  return Method(name or f"bhn-{hypernet.name}", init, loss, sample_outputs, primary,
                likelihood, True, sample_theta)


def _point_method(name: str, primary: PrimaryNet, likelihood: Likelihood, dropout_rate: float,
                  mc: bool, weight_decay: float) -> Method:
  if not isinstance(primary, PrimaryNet):
    raise TypeError(f"primary must be a PrimaryNet, got {type(primary).__name__}")
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
  if not weight_decay >= 0:
    raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")

  def init(key, x_init):
    net_params, theta0 = primary.init(key, x_init)
    return {"net": net_params, "theta": theta0}

  def loss(params, key, x, y, kl_weight, num_train):
    check_inputs(primary, x)
    likelihood.check_targets(y, np.shape(x)[0], primary.num_outputs)
    del kl_weight
    out = primary.apply(params["net"], params["theta"], x, key=key, dropout_rate=dropout_rate)
    nll = -jnp.mean(likelihood.log_prob(out, y))
    penalty = 0.5 * weight_decay * jnp.sum(jnp.square(params["theta"])) / num_train
    return nll + penalty, {"nll": nll, "kl": jnp.zeros(())}

  def sample_outputs(params, key, x, num_samples):
    check_inputs(primary, x)
    _check_num_samples(num_samples)
    h = primary.features(params["net"], x)
    if not mc:
      return primary.head(params["net"], params["theta"], h)[None]
    return jax.vmap(lambda k: primary.head(params["net"], params["theta"], h, key=k,
                                           dropout_rate=dropout_rate))(
        jax.random.split(key, num_samples))

  return Method(name, init, loss, sample_outputs, primary, likelihood, mc)


def mle(primary: PrimaryNet, likelihood: Likelihood, *, weight_decay: float = 0.0) -> Method:
  """Maximum likelihood (optionally with an L2 penalty on theta): the "MLE" baseline."""
  return _point_method("mle", primary, likelihood, 0.0, False, weight_decay)


def dropout(primary: PrimaryNet, likelihood: Likelihood, *, rate: float = 0.5) -> Method:
  """Dropout on the hidden units in training, the deterministic net at prediction."""
  return _point_method("dropout", primary, likelihood, rate, False, 0.0)


def mc_dropout(primary: PrimaryNet, likelihood: Likelihood, *, rate: float = 0.5) -> Method:
  """MC dropout (Gal and Ghahramani): dropout masks sampled at prediction time too."""
  return _point_method("mc-dropout", primary, likelihood, rate, True, 0.0)


def bayes_by_backprop(primary: PrimaryNet, likelihood: Likelihood, *,
                      prior_precision: float = 1.0, num_samples: int = 1,
                      init_scale: float = 0.01) -> Method:
  """Bayes by Backprop (Blundell et al.): factorial Gaussian q over all of theta.

  With `primary = dense_mlp(...)` theta is every weight and bias; the ELBO is the BHN
  objective with the 0-layer ("gaussian") hypernet, whose samples are `mu + sigma eps`
  (the reparameterization trick).
  """
  if not isinstance(primary, PrimaryNet):
    raise TypeError(f"primary must be a PrimaryNet, got {type(primary).__name__}")
  hypernet = make_hypernet("gaussian", primary.num_random)
  return bhn(primary, hypernet, likelihood, prior_precision=prior_precision,
             num_samples=num_samples, init_scale=init_scale, name="bbb")


METHODS = {"bhn": bhn, "mle": mle, "dropout": dropout, "mc-dropout": mc_dropout,
           "bbb": bayes_by_backprop}
