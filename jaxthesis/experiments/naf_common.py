"""Pieces shared by the chapter-9 experiments: targets, model configs, the training task.

Targets (2-D Gaussian grids, the four energies of Rezende & Mohamed 2015) and model
configurations are experiment code, not library code, so they live here rather than in
`jaxthesis.flows`. Training runs through `jaxthesis.engine` (lax.scan over steps, vmap
over seeds).
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


# The energies U1-U4 of Rezende & Mohamed (2015); the target density is exp(-U) / Z.
ENERGIES: dict[str, Callable[[Array], Array]] = {"u1": _u1, "u2": _u2, "u3": _u3, "u4": _u4}


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


def flow_task(flow: flows.Flow, loss_fn: Callable[..., Array], learning_rate: float,
              evaluate: Callable[..., Mapping[str, Array]] | None = None) -> engine.Task:
  """An engine `Task` training `flow` with Adam on `loss_fn(params, key, data)`.

  State is `(params, opt_state)`; `evaluate(params, data) -> {name: scalar}`.
  """
  optimizer = optax.adam(learning_rate)

  def init(key, hparams, data):
    del hparams, data
    params = flow.init(key)
    return params, optimizer.init(params)

  def step(state, step, key, hparams, data):
    del step, hparams
    params, opt_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params, key, data)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), {"loss": loss}, {}

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
