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
  (`jaxthesis.vi.kl_weight_schedule`), so the modes sharpen out of a q that covers them all.
* Adam at 5e-2 for 6000 steps, the last 30% cosine-decayed: the 1-D conditioner is a
  set of free pseudo-parameters, which Adam moves by about one learning rate per step,
  and the steps need slopes of tens.

`run` returns the mass near each mode, the ELBO, the samples and the true posterior on a
grid; `plot` redraws Fig. 9.8 from the saved files.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from jaxthesis import vi
from jaxthesis.experiments import _config, _plots, _results
from jaxthesis.experiments.naf import _common as nc

# Scale of the Gaussian base: sigmoid(x) ~ Phi(x / 1.702) (the probit approximation), so
# 2 sigmoid(x) with x ~ N(0, 1.702^2) is close to the U(0, 2) prior.
PRIOR_MATCHING_SCALE = 1.702

T_OBS = (0.0, 5.0 / 6.0, 10.0 / 6.0)
Y_OBS = (0.0, 0.0, 0.0)
NOISE_VARIANCE = 0.125
MODES = (0.0, 0.6, 1.2, 1.8)
MODE_HALF_WIDTH = 0.15  # "mass near a mode": within +-0.15 of it

REFERENCE = {
    "source": "Fig. 9.8",
    "expected": "the DSF posterior's samples show the four modes f = 0.0, 0.6, 1.2, 1.8 "
                "that the three observations allow (Section 9.6.2)",
    "modes": list(MODES),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis naf sine` run."""
  hidden_units: int = 32
  num_steps: int = 6000
  batch_size: int = 256
  learning_rate: float = 5e-2
  lr_decay_fraction: float = 0.3   # cosine decay over the last 30% of the steps
  anneal_fraction: float = 0.5     # beta: initial_beta -> 1 over the first half
  initial_beta: float = 0.01
  base_scale: float = PRIOR_MATCHING_SCALE
  num_samples: int = 20000
  posterior_grid: int = 4000       # points of the true posterior on (0, 2)
  seed: int = 0

  def __post_init__(self):
    nc.check_training_fields(self, "hidden_units", "num_steps", "batch_size", "learning_rate",
                             "lr_decay_fraction", "anneal_fraction", "initial_beta",
                             "base_scale", "num_samples", "seed")
    _config.integer(self, "posterior_grid", 2)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The README's protocol (6,000 steps); `quick`: 8 units, 80 steps."""
  base = (Config(hidden_units=8, num_steps=80, batch_size=64, num_samples=2000)
          if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  nc.add_training_arguments(p, schedule=True)


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


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Fits the DSF posterior; returns the results (no files but checkpoints)."""
  import jax
  import jax.numpy as jnp

  clock = _results.Stopwatch()
  flow, distribution = posterior_flow(config.hidden_units, config.base_scale)

  def loss_fn(params, key, data, beta):
    # -ELBO with the likelihood tempered by beta (beta = 1: the ELBO itself).
    del data
    f, log_q = distribution(params).sample_and_log_prob(seed=key,
                                                        sample_shape=(config.batch_size,))
    return -vi.elbo(log_likelihood(f[..., 0]), log_q, LOG_PRIOR, likelihood_weight=beta)

  learning_rate, beta_schedule = nc.schedules(config)
  task = nc.flow_task(flow, loss_fn, learning_rate, beta_schedule=beta_schedule)
  result = nc.run_seeds(task, config.num_steps, config.seed, 1, None, progress, "sine",
                        **nc.checkpoint_args(checkpoint_dir, "sine", config))
  params = nc.unstack(result.state[0], 0)
  # The final -ELBO (beta = 1) on the num_samples fresh samples that the histogram shows.
  f, log_q = distribution(params).sample_and_log_prob(
      seed=jax.random.PRNGKey(config.seed + 3), sample_shape=(config.num_samples,))
  neg_elbo = float(-vi.elbo(log_joint(f[..., 0]), log_q))
  samples = np.asarray(f)[:, 0]

  grid = np.linspace(1e-4, 2 - 1e-4, config.posterior_grid)
  log_post = np.asarray(log_joint(jnp.asarray(grid)))
  true = np.exp(log_post - log_post.max())
  true /= true.sum() * (grid[1] - grid[0])
  log_evidence = float(np.log(np.exp(log_post - log_post.max()).sum() * (grid[1] - grid[0]))
                       + log_post.max())
  half = MODE_HALF_WIDTH
  mass = {f"{m:.1f}": {"approx": float(np.mean(np.abs(samples - m) < half)),
                       "true": float(true[np.abs(grid - m) < half].sum() * (grid[1] - grid[0]))}
          for m in MODES}
  metrics = {"mode_mass": mass, "neg_elbo": neg_elbo, "log_evidence": log_evidence,
             "kl_estimate": neg_elbo + log_evidence,
             "modes_found": int(sum(v["approx"] > 0.05 for v in mass.values()))}
  arrays = {"samples": samples, "posterior/f": grid, "posterior/density": true}
  return nc.results("sine", config, metrics, REFERENCE, clock, arrays,
                    observations={"t": list(T_OBS), "y": list(Y_OBS)})


save = _results.save


def table(results: dict[str, Any]) -> str:
  rows = [[k, f"{v['approx']:.3f}", f"{v['true']:.3f}", "mode present"]
          for k, v in results["metrics"]["mode_mass"].items()]
  m = results["metrics"]
  title = (f"Sine-wave frequency posterior (mass within +-{MODE_HALF_WIDTH} of each mode; "
           f"-ELBO {m['neg_elbo']:.3f}, -log p(Y) {-m['log_evidence']:.3f})")
  return nc.titled_table(title, REFERENCE["source"],
                         ("mode f", "posterior mass (DSF)", "true mass",
                          f"thesis ({REFERENCE['source']})"), rows)


def plot(out: str) -> list[str]:
  """Fig. 9.8: the sine waves through the observations, and the posterior's samples
  against the true posterior, from the saved files."""
  results, arrays = _results.load(out)
  t_obs, y_obs = results["observations"]["t"], results["observations"]["y"]
  plt = _plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  tt = np.linspace(0, 2, 400)
  for m in results["reference"]["modes"]:
    axes[0].plot(tt, np.sin(2 * np.pi * m * tt), label=f"f={m}")
  axes[0].plot(t_obs, y_obs, "rx", markersize=10)
  axes[0].legend(fontsize=7)
  axes[0].set_xlabel("t")
  axes[1].hist(arrays["samples"], bins=200, range=(0, 2), density=True, alpha=0.6,
               label="DSF samples")
  axes[1].plot(arrays["posterior/f"], arrays["posterior/density"], "k", lw=1,
               label="true posterior")
  axes[1].set_xlabel("f")
  axes[1].legend(fontsize=7)
  return [_plots.savefig(fig, out, "sine_posterior.png", dpi=110)]
