"""`jaxthesis naf sine`: the multimodal posterior over a sine wave's frequency (Fig. 9.8).

`y(t) = sin(2 pi f t)`, prior `f ~ U(0, 2)`, data `t = (0, 5/6, 10/6)`, `y = (0, 0, 0)`,
likelihood `N(y_i; y_f(t_i), 0.125)` (Section 9.6.2). The approximate posterior is a 1-D
DSF (IAF direction) followed by `f = 2 sigmoid(.)` onto the prior's support (its
log-determinant enters `log q`), trained on the ELBO. Expected (thesis): the samples show
modes near 0, 0.6, 1.2 and 1.8.

The posterior's modes are narrow (std about 0.03) and 0.6 apart, so the DSF must build a
staircase of steep sigmoid steps (`f = 2 sum_j w_j sigmoid(a_j x + b_j)` up to the
squeeze, each plateau a mode). Trained as before (ELBO at full strength from step 0, Adam
5e-3) the reverse KL locked onto the first modes it formed (0 and 1.8) and never grew the
steps for 0.6 and 1.2. Three principled changes fix this:

* Start q at the prior: the base is N(0, 1.702^2), since `sigmoid(x) ~ Phi(x / 1.702)`
  makes `f = 2 sigmoid(x)` close to U(0, 2) for the identity DSF.
* Anneal the likelihood (Rezende & Mohamed 2015): `E_q[log q(f) - log p(f) - beta_t
  log p(Y | f)]` with `beta_t` rising from 0.01 to 1 over the first half of training
  (`naf_common.kl_annealing`), so the modes sharpen out of a q that covers them all.
* Adam at 5e-2 for 6000 steps, the last 30% cosine-decayed: the 1-D conditioner is a
  set of free pseudo-parameters, which Adam moves by about one learning rate per step,
  and the steps need slopes of tens.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from jaxthesis.experiments.naf import _common as nc

# Scale of the Gaussian base: sigmoid(x) ~ Phi(x / 1.702) (the probit approximation), so
# 2 sigmoid(x) with x ~ N(0, 1.702^2) is close to the U(0, 2) prior.
PRIOR_MATCHING_SCALE = 1.702

T_OBS = (0.0, 5.0 / 6.0, 10.0 / 6.0)
Y_OBS = (0.0, 0.0, 0.0)
NOISE_VARIANCE = 0.125
MODES = (0.0, 0.6, 1.2, 1.8)


@dataclasses.dataclass(frozen=True)
class SineConfig:
  hidden_units: int = 32
  num_steps: int = 6000
  batch_size: int = 256
  learning_rate: float = 5e-2
  lr_decay_fraction: float = 0.3   # cosine decay over the last 30% of the steps
  anneal_fraction: float = 0.5     # beta: initial_beta -> 1 over the first half
  initial_beta: float = 0.01
  base_scale: float = PRIOR_MATCHING_SCALE
  num_samples: int = 20000
  seed: int = 0


def get_config(quick: bool = False) -> SineConfig:
  if quick:
    return SineConfig(hidden_units=8, num_steps=80, batch_size=64, num_samples=2000)
  return SineConfig()


def check_config(config: SineConfig) -> None:
  """Raises ValueError naming the first config field out of range."""
  for name in ("hidden_units", "num_steps", "batch_size", "num_samples"):
    value = getattr(config, name)
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{name} must be a positive int, got {value!r}")
  for name in ("learning_rate", "base_scale"):
    value = getattr(config, name)
    if not value > 0:
      raise ValueError(f"config.{name} must be > 0, got {value!r}")
  nc.check_schedule_config(config)


def log_likelihood(f):
  """log p(Y | f, T) = sum_i log N(y_i; sin(2 pi f t_i), 0.125) (Section 9.6.2)."""
  import jax.numpy as jnp
  t, y = jnp.asarray(T_OBS), jnp.asarray(Y_OBS)
  pred = jnp.sin(2 * jnp.pi * f[..., None] * t)
  return (-0.5 * (y - pred) ** 2 / NOISE_VARIANCE
          - 0.5 * math.log(2 * math.pi * NOISE_VARIANCE)).sum(-1)


LOG_PRIOR = math.log(0.5)  # log U(f; 0, 2) on the support


def log_joint(f):
  """log p(Y | f, T) + log p(f), for f in (0, 2)."""
  return log_likelihood(f) + LOG_PRIOR


def posterior_flow(hidden_units: int, base_scale: float = 1.0):
  """The approximate posterior: `f = 2 sigmoid(DSF(x))`, `x ~ N(0, base_scale^2)`.

  Returns `(flow, distribution)`: the DSF `Flow` (its `init` builds the trainable
  params) and `distribution(params) -> distrax.Transformed` over f [..., 1].
  """
  import distrax
  import jax.numpy as jnp
  from jaxthesis import flows
  if not base_scale > 0:
    raise ValueError(f"base_scale must be > 0, got {base_scale!r}")
  flow = flows.autoregressive_flow(1, "dsf", transformer_kwargs={"hidden_units": hidden_units},
                                   hidden_sizes=(8,), direction="iaf", output_init_scale=0.1)
  squash = distrax.Block(distrax.Chain([distrax.ScalarAffine(0.0, 2.0), distrax.Sigmoid()]), 1)
  base = distrax.MultivariateNormalDiag(jnp.zeros(1), jnp.full((1,), float(base_scale)))

  def distribution(params):
    return distrax.Transformed(base, distrax.Chain([squash, flow.bijector(params)]))
  return flow, distribution


def run(config: SineConfig, out_dir: str, progress: bool = True) -> dict:
  import jax
  import jax.numpy as jnp

  check_config(config)
  flow, distribution = posterior_flow(config.hidden_units, config.base_scale)

  def loss_fn(params, key, data, beta):
    # -ELBO with the likelihood tempered by beta (beta = 1: the ELBO itself).
    del data
    f, log_q = distribution(params).sample_and_log_prob(seed=key,
                                                        sample_shape=(config.batch_size,))
    return (log_q - LOG_PRIOR - beta * log_likelihood(f[..., 0])).mean()

  learning_rate = nc.learning_rate_schedule(config.learning_rate, config.num_steps,
                                            config.lr_decay_fraction)
  beta_schedule = nc.kl_annealing(config.num_steps, config.anneal_fraction,
                                  config.initial_beta)
  task = nc.flow_task(flow, loss_fn, learning_rate, beta_schedule=beta_schedule)
  result = nc.run_seeds(task, config.num_steps, config.seed, 1, None, progress, "sine")
  params = nc.unstack(result.state[0], 0)
  # The final -ELBO (beta = 1) on the num_samples fresh samples that the histogram shows.
  f, log_q = distribution(params).sample_and_log_prob(
      seed=jax.random.PRNGKey(config.seed + 3), sample_shape=(config.num_samples,))
  neg_elbo = float(jnp.mean(log_q - log_joint(f[..., 0])))
  samples = np.asarray(f)[:, 0]

  grid = np.linspace(1e-4, 2 - 1e-4, 4000)
  log_post = np.asarray(log_joint(jnp.asarray(grid)))
  true = np.exp(log_post - log_post.max())
  true /= true.sum() * (grid[1] - grid[0])
  log_evidence = float(np.log(np.exp(log_post - log_post.max()).sum() * (grid[1] - grid[0]))
                       + log_post.max())
  half = 0.15
  mass = {f"{m:.1f}": {"approx": float(np.mean(np.abs(samples - m) < half)),
                       "true": float(true[np.abs(grid - m) < half].sum() * (grid[1] - grid[0]))}
          for m in MODES}
  metrics = {"mode_mass": mass, "neg_elbo": neg_elbo, "log_evidence": log_evidence,
             "kl_estimate": neg_elbo + log_evidence,
             "modes_found": int(sum(v["approx"] > 0.05 for v in mass.values()))}

  plt = nc.matplotlib()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  tt = np.linspace(0, 2, 400)
  for m in MODES:
    axes[0].plot(tt, np.sin(2 * np.pi * m * tt), label=f"f={m}")
  axes[0].plot(T_OBS, Y_OBS, "rx", markersize=10)
  axes[0].legend(fontsize=7)
  axes[0].set_xlabel("t")
  axes[1].hist(samples, bins=200, range=(0, 2), density=True, alpha=0.6, label="DSF samples")
  axes[1].plot(grid, true, "k", lw=1, label="true posterior")
  axes[1].set_xlabel("f")
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  fig.savefig(os.path.join(out_dir, "sine_posterior.png"), dpi=110)
  plt.close(fig)
  return metrics


TABLE_HEADERS = ("mode f", "posterior mass (DSF)", "true mass", "thesis (Fig 9.8)")


def table_rows(metrics: dict, config: SineConfig) -> list[list[str]]:
  return [[k, f"{v['approx']:.3f}", f"{v['true']:.3f}", "mode present"]
          for k, v in metrics["mode_mass"].items()]
