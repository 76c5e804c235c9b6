"""The BHN training objective: the per-datapoint negative ELBO (Eqs. 7.2, 11.23-11.25).

For a minibatch of B examples out of N and S samples `theta_s = h(eps_s)`,

  loss = -(1/(S B)) sum_{s,i} log p(y_i | x_i, theta_s)
         + w (1/S) sum_s [log q(theta_s) - log p(theta_s)] / N,

with `log q(theta) = log N(eps) - log|det dh/deps|` (Eq. 11.25), the prior
`theta ~ N(0, I / lambda)` (the L2 penalty on g of Section 11.2.2) and `w` the KL weight
(`kl_annealing`). Samples are batched with `vmap`; the primary net's sample-independent
products (`PrimaryNet.features`) are computed once outside it.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks, vi
from jaxthesis.bhn.hypernets import Hypernet
from jaxthesis.bhn.primary import PrimaryNet, check_inputs
from jaxthesis.typing import Array, ArrayLike, Params, PRNGKey

NOISE_SHARING = ("minibatch", "example")
PROB_CLIP = (1e-3, 1.0 - 1e-3)
_KL_START = 1e-3  # the KL weight at epoch 0


class Likelihood(NamedTuple):
  """An observation model `log p(y | outputs)` per example.

  Attributes:
    name: "categorical" or "gaussian".
    log_prob: `(outputs [B, K], y [B] or [B, K]) -> [B]`.
    check_targets: `(y, batch_size, num_outputs=None) -> None`, raises on malformed
      targets (pre-tracing); `num_outputs` K, the net's outputs, when known.
  """
  name: str
  log_prob: Callable[[Array, Array], Array]
  check_targets: Callable[..., None]


def clipped_softmax(logits: Array, clip: tuple[float, float] = PROB_CLIP) -> Array:
  """`softmax(logits)` clipped to `(0.001, 0.999)` (Section 7.3.3: critical for stability)."""
  return jnp.clip(jax.nn.softmax(logits, axis=-1), clip[0], clip[1])


def categorical_likelihood(clip: Optional[tuple[float, float]] = PROB_CLIP) -> Likelihood:
  """`log p(y | logits) = log clip(softmax(logits))_y`; `clip=None` for the plain softmax."""
  if clip is not None and not 0.0 <= clip[0] < clip[1] <= 1.0:
    raise ValueError(f"clip must satisfy 0 <= low < high <= 1, got {clip!r}")

  def log_prob(logits, y):
    if clip is None:
      log_p = jax.nn.log_softmax(logits, axis=-1)
    else:
      log_p = jnp.log(clipped_softmax(logits, clip))
    return jnp.take_along_axis(log_p, y[..., None].astype(jnp.int32), -1)[..., 0]

  def check_targets(y, batch_size, num_outputs=None):
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
      raise TypeError(f"y must hold integer class labels, got dtype {jnp.result_type(y)}")
    if np.shape(y) != (batch_size,):
      raise ValueError(f"y must have shape [{batch_size}], got {np.shape(y)}")
    if num_outputs is not None:
      # A label outside [0, K) would give NaN (>= K) or wrap around (< 0) in take_along_axis.
      _checks.check_below("y", y, num_outputs, "class labels")

  return Likelihood("categorical", log_prob, check_targets)


def gaussian_likelihood(noise_std: float) -> Likelihood:
  """`log N(y; outputs, noise_std^2)` summed over output dimensions (regression)."""
  if not noise_std > 0:
    raise ValueError(f"noise_std must be > 0, got {noise_std!r}")

  def log_prob(outputs, y):
    z = (y - outputs) / noise_std
    return jnp.sum(-0.5 * jnp.square(z) - jnp.log(noise_std) - 0.5 * np.log(2 * np.pi), -1)

  def check_targets(y, batch_size, num_outputs=None):
    _checks.check_floating("y", y)
    width = "K" if num_outputs is None else str(num_outputs)
    if (np.ndim(y) != 2 or np.shape(y)[0] != batch_size
        or (num_outputs is not None and np.shape(y)[1] != num_outputs)):
      raise ValueError(f"y must have shape [{batch_size}, {width}] (K = the net's outputs), "
                       f"got {np.shape(y)}")

  return Likelihood("gaussian", log_prob, check_targets)


def log_prior(theta: Array, prior_precision: ArrayLike) -> Array:
  """`log N(theta; 0, I / lambda)` summed over the last axis."""
  lam = jnp.asarray(prior_precision, jnp.float32)
  d = theta.shape[-1]
  return 0.5 * d * (jnp.log(lam) - np.log(2 * np.pi)) - 0.5 * lam * jnp.sum(jnp.square(theta), -1)


def gaussian_kl(loc: Array, scale: Array, prior_precision: ArrayLike) -> Array:
  """Closed-form `KL(N(loc, diag scale^2) || N(0, I / lambda))`, summed over dimensions."""
  lam = jnp.asarray(prior_precision, jnp.float32)
  var = jnp.square(scale)
  return 0.5 * jnp.sum(lam * (var + jnp.square(loc)) - 1.0 - jnp.log(lam * var), -1)


def kl_annealing(epoch: ArrayLike, num_epochs: int) -> Array:
  """The KL weight `w = min(1, 0.001 + epoch / (epochs / 2))` of the BHN experiments.

  Args:
    epoch: e >= 0 (any shape; checked when concrete).
    num_epochs: E >= 1.
  """
  if not isinstance(num_epochs, (int, np.integer)) or num_epochs < 1:
    raise ValueError(f"num_epochs must be a positive int, got {num_epochs!r}")
  _checks.check_nonnegative("epoch", epoch)
  # `vi.linear_anneal` with start 0.001 reaching 1 at epoch 0.999 E / 2. Time is counted in
  # thousandths of an epoch because linear_anneal returns 1 throughout when its ramp is
  # shorter than one step, and for E <= 2 the ramp is shorter than one epoch.
  ticks = 1000
  return vi.linear_anneal(ticks * jnp.asarray(epoch, jnp.float32), ticks * int(num_epochs),
                          _KL_START, (1.0 - _KL_START) / 2.0)


def check_model(primary: PrimaryNet, hypernet: Hypernet) -> None:
  """A `PrimaryNet` and a `Hypernet` generating exactly its random vector, before tracing."""
  if not isinstance(primary, PrimaryNet):
    raise TypeError(f"primary must be a PrimaryNet, got {type(primary).__name__}")
  if not isinstance(hypernet, Hypernet):
    raise TypeError(f"hypernet must be a Hypernet, got {type(hypernet).__name__}")
  if hypernet.num_dims != primary.num_random:
    raise ValueError(f"hypernet generates {hypernet.num_dims} values, the primary net needs "
                     f"{primary.num_random}")


def check_elbo_args(primary: PrimaryNet, hypernet: Hypernet, likelihood: Likelihood, x, y,
                    num_train, prior_precision, num_samples, noise) -> None:
  """The checks of `negative_elbo`, before tracing."""
  check_model(primary, hypernet)
  if not isinstance(likelihood, Likelihood):
    raise TypeError(f"likelihood must be a Likelihood, got {type(likelihood).__name__}")
  check_inputs(primary, x)
  likelihood.check_targets(y, np.shape(x)[0], primary.num_outputs)
  if isinstance(num_train, (int, np.integer)):
    if num_train < 1:
      raise ValueError(f"num_train must be >= 1, got {num_train}")
  else:
    _checks.check_scalar("num_train", num_train, positive=True)
  _checks.check_scalar("prior_precision", prior_precision, positive=True)
  if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
  _checks.check_choice("noise", noise, NOISE_SHARING)


def sample_outputs(primary: PrimaryNet, net_params: Params, theta: Array, x: Array, *,
                   noise: str = "minibatch", key: Optional[PRNGKey] = None,
                   dropout_rate: float = 0.0, vectorize: bool = True) -> Array:
  """Primary-net outputs for S parameter samples: `[S, B, K]`.

  Args:
    theta: `[S, D]` (one sample per minibatch) or `[S, B, D]` (one per example).
    noise: "minibatch" or "example", matching `theta`'s shape.
    vectorize: vmap over samples (default) or a Python loop (the reference the tests and
      the benchmark compare against).
  """
  _checks.check_choice("noise", noise, NOISE_SHARING)
  h = primary.features(net_params, x)  # computed once for every sample
  if noise == "minibatch":
    one = lambda t: primary.head(net_params, t, h, key=key, dropout_rate=dropout_rate)
  else:
    per_example = lambda t, hi: primary.head(net_params, t, hi[None], key=key,
                                             dropout_rate=dropout_rate)[0]
    one = lambda t: jax.vmap(per_example)(t, h)
  if vectorize:
    return jax.vmap(one)(theta)
  return jnp.stack([one(theta[s]) for s in range(theta.shape[0])])


def negative_elbo(key: PRNGKey, hyper_params: Params, net_params: Params, x: Array, y: Array, *,
                  primary: PrimaryNet, hypernet: Hypernet, likelihood: Likelihood,
                  num_train: ArrayLike, kl_weight: ArrayLike = 1.0,
                  prior_precision: ArrayLike = 1.0, num_samples: int = 1,
                  noise: str = "minibatch", vectorize: bool = True
                  ) -> tuple[Array, dict[str, Array]]:
  """The per-datapoint negative ELBO of a Bayesian hypernet (Eqs. 7.2, 11.25).

  Args:
    key: draws the noise `eps`.
    hyper_params: the hypernet's parameters (phi).
    net_params: the primary net's point parameters (v, b).
    x: inputs [B, ...]; y: targets.
    primary, hypernet, likelihood: the model.
    num_train: N, the training-set size (the KL term is divided by it).
    kl_weight: w >= 0, the annealed weight of the KL term (a scalar).
    prior_precision: lambda > 0 of the prior N(0, I / lambda).
    num_samples: S noise samples.
    noise: "minibatch" (one theta per sample shared by the minibatch, the thesis's default)
      or "example" (an independent theta per example and sample).
    vectorize: vmap over samples (True) or a Python loop over them (tests, benchmark).

  Returns:
    `(loss, {"nll": -mean log-likelihood, "kl": mean log q - log p})`.
  """
  check_elbo_args(primary, hypernet, likelihood, x, y, num_train, prior_precision, num_samples,
                  noise)
  _checks.check_scalar("kl_weight", kl_weight)
  _checks.check_nonnegative("kl_weight", kl_weight)
  shape = (num_samples,) if noise == "minibatch" else (num_samples, np.shape(x)[0])
  eps = jax.random.normal(key, shape + (hypernet.num_dims,))
  if vectorize:
    theta, log_q = hypernet.transform(hyper_params, eps)
  else:
    pairs = [hypernet.transform(hyper_params, eps[s]) for s in range(num_samples)]
    theta, log_q = jnp.stack([p[0] for p in pairs]), jnp.stack([p[1] for p in pairs])
  outputs = sample_outputs(primary, net_params, theta, x, noise=noise, vectorize=vectorize)
  log_lik = jax.vmap(likelihood.log_prob, in_axes=(0, None))(outputs, y)  # [S, B]
  kl = jnp.mean(log_q - log_prior(theta, prior_precision))
  nll = -jnp.mean(log_lik)
  return nll + kl_weight * kl / num_train, {"nll": nll, "kl": kl}
