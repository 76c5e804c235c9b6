"""Pieces shared by the chapter-9 experiments: targets, model configs, the training task.

Targets (2-D Gaussian grids, the four energies of Rezende & Mohamed 2015, U2-U4 closed
off outside the plotted square) and model configurations are experiment code, not library
code, so they live here rather than in `jaxthesis.flows`. Training runs through
`jaxthesis.engine` (lax.scan over steps, vmap over seeds), optionally with a learning-rate
schedule and an annealed (tempered) target.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import engine, flows
from jaxthesis.typing import Array, PRNGKey

# The three flows compared throughout Section 9.6.1: 6 stacked affine layers with reversed
# ordering vs one DSF vs one DDSF (d = 16, L = 2).
MODELS: dict[str, dict[str, Any]] = {
    "affine": dict(transformer="affine", num_layers=6, permutation="reverse"),
    "dsf": dict(transformer="dsf", num_layers=1, transformer_kwargs={"hidden_units": 16}),
    "ddsf": dict(transformer="ddsf", num_layers=1,
                 transformer_kwargs={"hidden_units": 16, "num_layers": 2}),
}


def build_flow(model: str, num_dims: int, direction: str, hidden: int,
               **overrides: Any) -> flows.Flow:
  if model not in MODELS:
    raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
  kwargs = {**MODELS[model], **overrides}
  return flows.autoregressive_flow(num_dims, hidden_sizes=(hidden, hidden),
                                   direction=direction, output_init_scale=0.1, **kwargs)


# ------------------------------------------------------------------------------ targets


class GaussianGrid:
  """Equal mixture of isotropic Gaussians centred on an n x n meshgrid over [-5, 5]^2.

  The standard deviation is a fixed fraction of the grid spacing (spacing / 6), so the
  modes stay separated for every n (Fig. 9.6 of the thesis).
  """

  def __init__(self, modes_per_dim: int):
    if modes_per_dim < 2:
      raise ValueError(f"modes_per_dim must be >= 2, got {modes_per_dim}")
    axis = np.linspace(-5.0, 5.0, modes_per_dim)
    self.n = modes_per_dim
    self.centers = jnp.asarray(np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2),
                               jnp.float32)
    self.std = float(axis[1] - axis[0]) / 6.0

  def sample(self, key: PRNGKey, num: int) -> Array:
    k1, k2 = jax.random.split(key)
    idx = jax.random.randint(k1, (num,), 0, self.centers.shape[0])
    return self.centers[idx] + self.std * jax.random.normal(k2, (num, 2))

  def log_prob(self, x: Array) -> Array:
    sq = ((x[..., None, :] - self.centers) ** 2).sum(-1)
    log_comp = -0.5 * sq / self.std ** 2 - math.log(2 * math.pi * self.std ** 2)
    return jax.nn.logsumexp(log_comp, axis=-1) - math.log(self.centers.shape[0])

  def modes_recovered(self, samples: np.ndarray) -> int:
    """Modes holding at least half the samples the target puts within one std of them.

    The target puts 1 - exp(-1/2) = 39% of each component's mass within one std of its
    centre; a density smeared over the square puts about a quarter of that there.
    """
    samples = np.asarray(samples)
    d = np.linalg.norm(samples[:, None, :] - np.asarray(self.centers)[None], axis=-1)
    counts = (d < self.std).sum(0)
    expected = (1 - math.exp(-0.5)) * len(samples) / self.centers.shape[0]
    return int((counts >= 0.5 * expected).sum())


def _w1(z):
  return jnp.sin(2 * jnp.pi * z[..., 0] / 4)


def _w2(z):
  return 3 * jnp.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)


def _w3(z):
  return 3 * jax.nn.sigmoid((z[..., 0] - 1) / 0.3)


def _u1(z):
  norm = jnp.linalg.norm(z, axis=-1)
  return (0.5 * ((norm - 2) / 0.4) ** 2
          - jnp.logaddexp(-0.5 * ((z[..., 0] - 2) / 0.6) ** 2,
                          -0.5 * ((z[..., 0] + 2) / 0.6) ** 2))


def _u2(z):
  return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2


def _u3(z):
  return -jnp.logaddexp(-0.5 * ((z[..., 1] - _w1(z)) / 0.35) ** 2,
                        -0.5 * ((z[..., 1] - _w1(z) + _w2(z)) / 0.35) ** 2)


def _u4(z):
  return -jnp.logaddexp(-0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2,
                        -0.5 * ((z[..., 1] - _w1(z) + _w3(z)) / 0.35) ** 2)


# Rezende & Mohamed (2015) define U2-U4 only on the square [-4, 4]^2 that Fig. 9.1 shows:
# none of them constrains z1, so exp(-U) is not integrable over R^2 and KL(q || p) is
# unbounded below (a flow lowers it by spreading along z1 beyond the plot). `confine`
# closes the square with a soft quadratic wall on |z1| > BOX_LIMIT, leaving the energy
# unchanged inside the plotted square; U1 is proper (its ring term confines both axes).
BOX_LIMIT = 4.0
WALL_WIDTH = 0.2


def confine(energy: Callable[[Array], Array], limit: float = BOX_LIMIT,
            width: float = WALL_WIDTH) -> Callable[[Array], Array]:
  """`U(z) + 0.5 * (max(|z_1| - limit, 0) / width)^2`: a proper density, equal to U inside.

  Args:
    energy: `U(z)` over z [..., 2].
    limit: where the wall starts on the first coordinate (> 0).
    width: length scale of the wall (> 0); outside the square the target falls off like
      a Gaussian of this standard deviation.

  Returns:
    The confined energy, a function of z [..., 2].
  """
  if not limit > 0:
    raise ValueError(f"limit must be > 0, got {limit!r}")
  if not width > 0:
    raise ValueError(f"width must be > 0, got {width!r}")

  def confined(z):
    excess = jax.nn.relu(jnp.abs(z[..., 0]) - limit)
    return energy(z) + 0.5 * (excess / width) ** 2
  return confined


# The energies U1-U4 of Rezende & Mohamed (2015); the target density is exp(-U) / Z.
ENERGIES: dict[str, Callable[[Array], Array]] = {
    "u1": _u1, "u2": confine(_u2), "u3": confine(_u3), "u4": confine(_u4)}


def grid_points(limit: float, num: int) -> tuple[np.ndarray, np.ndarray, float]:
  """A num x num grid over [-limit, limit]^2: (axis, points [num^2, 2], cell area)."""
  axis = np.linspace(-limit, limit, num, dtype=np.float32)
  pts = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
  return axis, pts, float(axis[1] - axis[0]) ** 2


def log_normalizer(energy: Callable[[Array], Array], limit: float = 6.0,
                   num: int = 600) -> float:
  """log Z = log of the integral of exp(-U) over [-limit, limit]^2 (Riemann sum)."""
  _, pts, area = grid_points(limit, num)
  return float(jax.nn.logsumexp(-energy(jnp.asarray(pts))) + math.log(area))


# -------------------------------------------------------------------------- training


def kl_annealing(num_steps: int, anneal_fraction: float,
                 initial_beta: float = 0.01) -> Callable[[Array], Array]:
  """Inverse temperature `beta_t` of an annealed reverse-KL / ELBO objective.

  The objective `E_q[log q(y) - beta_t log p~(y)]` (the KL of eq. 9.3 to the tempered
  target `p~^beta`) is minimized with `beta_t` rising linearly from `initial_beta` to 1
  over the first `anneal_fraction * num_steps` steps, then held at 1, as Rezende &
  Mohamed (2015) do with `beta_t = min(1, 0.01 + t / 10^4)`. Early on the tempered target
  is nearly flat, so q spreads over every mode before the modes sharpen; this keeps the
  mode-seeking reverse KL from locking onto the first modes it finds.

  Args:
    num_steps: total number of training steps (>= 1).
    anneal_fraction: fraction of the steps spent annealing, in [0, 1]; 0 means
      `beta_t = 1` throughout.
    initial_beta: `beta_0`, in (0, 1].

  Returns:
    `beta(step) -> scalar` (jit-able, `step` may be traced).
  """
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
  if not 0.0 <= anneal_fraction <= 1.0:
    raise ValueError(f"anneal_fraction must be in [0, 1], got {anneal_fraction!r}")
  if not 0.0 < initial_beta <= 1.0:
    raise ValueError(f"initial_beta must be in (0, 1], got {initial_beta!r}")
  anneal_steps = anneal_fraction * num_steps
  if anneal_steps < 1:
    return lambda step: jnp.ones((), jnp.float32)

  def beta(step):
    progress = jnp.asarray(step, jnp.float32) / anneal_steps
    return jnp.minimum(1.0, initial_beta + (1.0 - initial_beta) * progress)
  return beta


def learning_rate_schedule(learning_rate: float, num_steps: int, decay_fraction: float,
                           final_scale: float = 0.05) -> float | optax.Schedule:
  """Constant `learning_rate`, then a cosine decay to `final_scale * learning_rate`.

  The decay covers the last `decay_fraction * num_steps` steps; with 0 the rate stays
  constant (the float itself is returned).

  Args:
    learning_rate: the Adam step size (> 0).
    num_steps: total number of training steps (>= 1).
    decay_fraction: fraction of the steps spent decaying, in [0, 1].
    final_scale: the rate at the last step relative to `learning_rate`, in [0, 1].

  Returns:
    A float or an optax schedule.
  """
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
  if not 0.0 <= decay_fraction <= 1.0:
    raise ValueError(f"decay_fraction must be in [0, 1], got {decay_fraction!r}")
  if not 0.0 <= final_scale <= 1.0:
    raise ValueError(f"final_scale must be in [0, 1], got {final_scale!r}")
  decay_steps = int(round(decay_fraction * num_steps))
  if decay_steps < 1:
    return learning_rate
  decay = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=final_scale)
  if decay_steps >= num_steps:
    return decay
  return optax.join_schedules([optax.constant_schedule(learning_rate), decay],
                              [num_steps - decay_steps])


def check_schedule_config(config: Any) -> None:
  """Raises ValueError naming `config.lr_decay_fraction`, `config.anneal_fraction` or
  `config.initial_beta` when out of range ([0, 1], [0, 1], (0, 1])."""
  for name in ("lr_decay_fraction", "anneal_fraction"):
    value = getattr(config, name)
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"config.{name} must be in [0, 1], got {value!r}")
  if not 0.0 < config.initial_beta <= 1.0:
    raise ValueError(f"config.initial_beta must be in (0, 1], got {config.initial_beta!r}")


def flow_task(flow: flows.Flow, loss_fn: Callable[..., Array],
              learning_rate: float | optax.Schedule,
              evaluate: Callable[..., Mapping[str, Array]] | None = None,
              beta_schedule: Callable[[Array], Array] | None = None) -> engine.Task:
  """An engine `Task` training `flow` with Adam on `loss_fn(params, key, data)`.

  State is `(params, opt_state)`; `evaluate(params, data) -> {name: scalar}`. With a
  `beta_schedule` (e.g. `kl_annealing(...)`) the loss is called as
  `loss_fn(params, key, data, beta)` with `beta = beta_schedule(step)`, and `beta` is
  recorded as a per-step metric. `learning_rate` may be an optax schedule.
  """
  optimizer = optax.adam(learning_rate)

  def init(key, hparams, data):
    del hparams, data
    params = flow.init(key)
    return params, optimizer.init(params)

  def step(state, step, key, hparams, data):
    del hparams
    params, opt_state = state
    if beta_schedule is None:
      loss, grads = jax.value_and_grad(loss_fn)(params, key, data)
      metrics = {}
    else:
      beta = beta_schedule(step)
      loss, grads = jax.value_and_grad(loss_fn)(params, key, data, beta)
      metrics = {"beta": beta}
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), {"loss": loss}, metrics

  eval_fn = None
  if evaluate is not None:
    eval_fn = lambda state, hparams, data: evaluate(state[0], data)
  return engine.Task(init, step, eval_fn)


def run_seeds(task: engine.Task, num_steps: int, seed: int, num_seeds: int, data: Any,
              progress: bool, description: str) -> engine.RunResult:
  runner = engine.Runner(task, num_steps, progress=progress, description=description,
                         eval_every=max(1, num_steps // 20))
  keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
  return runner.run(keys, None, data)


def unstack(tree: Any, index: int) -> Any:
  return jax.tree_util.tree_map(lambda x: x[index], tree)


def smooth(curve: np.ndarray, window: int) -> np.ndarray:
  """Moving average along the last axis (valid part)."""
  window = max(1, min(window, curve.shape[-1]))
  kernel = np.ones(window) / window
  return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), -1, curve)


def matplotlib():
  import matplotlib as mpl
  mpl.use("Agg")
  import matplotlib.pyplot as plt
  return plt
