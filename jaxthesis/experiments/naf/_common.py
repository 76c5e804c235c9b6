"""Pieces shared by the chapter-9 studies: targets, model configs, losses, the training task,
config checks and command-line options.

Targets (2-D Gaussian grids, the four energies of Rezende & Mohamed 2015, U2-U4 closed
off outside the plotted square) and model configurations are experiment code, not library
code, so they live here rather than in `jaxthesis.flows`. Training runs through
`jaxthesis.engine` (lax.scan over steps, vmap over seeds), optionally with a learning-rate
schedule and an annealed (tempered) target from `jaxthesis.vi`. No study imports another:
what two studies share is here.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import engine, flows, vi
from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.typing import Array, PRNGKey

# The three flows compared throughout Section 9.6.1: 6 stacked affine layers with reversed
# ordering vs one DSF vs one DDSF (d = 16, L = 2).
MODELS: dict[str, dict[str, Any]] = {
    "affine": dict(transformer="affine", num_layers=6, permutation="reverse"),
    "dsf": dict(transformer="dsf", num_layers=1, transformer_kwargs={"hidden_units": 16}),
    "ddsf": dict(transformer="ddsf", num_layers=1,
                 transformer_kwargs={"hidden_units": 16, "num_layers": 2}),
}


def with_form(flow_kwargs: dict, surjective: bool) -> dict:
  """`autoregressive_flow` keyword arguments with the DSF / DDSF form set (others as given)."""
  if flow_kwargs.get("transformer") not in ("dsf", "ddsf"):
    return flow_kwargs
  return {**flow_kwargs, "transformer_kwargs": {**flow_kwargs.get("transformer_kwargs", {}),
                                                "surjective": surjective}}


def build_flow(model: str, num_dims: int, direction: str, hidden: int,
               surjective: bool = True, **overrides: Any) -> flows.Flow:
  """One of `MODELS`; `surjective=False` gives DSF / DDSF in the thesis's exact, bounded
  form (Eqs. 9.8-9.10) instead of the default bijection of the real line."""
  if model not in MODELS:
    raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
  kwargs = with_form({**MODELS[model], **overrides}, surjective)
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


def max_likelihood_loss(flow: flows.Flow, target: GaussianGrid,
                        batch_size: int) -> Callable[..., Array]:
  """`loss_fn(params, key, data) = -mean log q(x)` on `batch_size` fresh samples x ~ target
  (MAF-style training, Figs. 9.2, 9.6 and 9.7)."""
  def loss_fn(params, key, data):
    del data
    return -flow.distribution(params).log_prob(target.sample(key, batch_size)).mean()
  return loss_fn


def reverse_kl_loss(flow: flows.Flow, energy: Callable[[Array], Array],
                    batch_size: int) -> Callable[..., Array]:
  """`loss_fn(params, key, data, beta=1) = E_q[log q(y) + beta U(y)]` on `batch_size` samples.

  At `beta = 1` this is `KL(q || p) - log Z` (Eq. 9.3), the negative ELBO with the
  unnormalized target `exp(-U)` as likelihood; smaller `beta` tempers the target to
  `p^beta` (used while annealing).
  """
  def loss_fn(params, key, data, beta=1.0):
    del data
    y, log_q = flow.distribution(params).sample_and_log_prob(seed=key,
                                                             sample_shape=(batch_size,))
    return -vi.elbo(-energy(y), log_q, likelihood_weight=beta)
  return loss_fn


def schedules(config: Any, learning_rate: float | None = None):
  """`(learning rate or optax schedule, beta schedule)` of a config with the fields
  `num_steps`, `learning_rate`, `lr_decay_fraction`, `anneal_fraction`, `initial_beta`:
  the rate cosine-decays to 5% over the last `lr_decay_fraction` of the steps and the
  target's inverse temperature rises from `initial_beta` to 1 over the first
  `anneal_fraction` (`jaxthesis.vi`)."""
  rate = config.learning_rate if learning_rate is None else learning_rate
  return (vi.constant_then_cosine(rate, config.num_steps, config.lr_decay_fraction),
          vi.kl_weight_schedule(config.num_steps, config.anneal_fraction,
                                config.initial_beta))


def flow_task(flow: flows.Flow, loss_fn: Callable[..., Array],
              learning_rate: float | optax.Schedule,
              evaluate: Callable[..., Mapping[str, Array]] | None = None,
              beta_schedule: Callable[[Array], Array] | None = None) -> engine.Task:
  """An engine `Task` training `flow` with Adam on `loss_fn(params, key, data)`.

  State is `(params, opt_state)`; `evaluate(params, data) -> {name: scalar}`. With a
  `beta_schedule` (e.g. `vi.kl_weight_schedule(...)`) the loss is called as
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
              progress: bool, description: str, *, eval_every: int | None = None,
              checkpoint_dir: str | None = None, fingerprint: Any = None) -> engine.RunResult:
  """Runs `task` for `num_seeds` restarts split from `PRNGKey(seed)` (one vmapped program),
  checkpointing under `checkpoint_dir` when given."""
  runner = engine.Runner(task, num_steps, progress=progress, description=description,
                         eval_every=eval_every or max(1, num_steps // 20))
  keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
  return runner.run(keys, None, data, checkpoint_dir=checkpoint_dir, fingerprint=fingerprint)


def checkpoint_args(checkpoint_dir: str | None, name: str, config: Any,
                    selectors: tuple[str, ...] = ()) -> dict[str, Any]:
  """`run_seeds` keywords checkpointing one training run under `checkpoint_dir/name`.

  The fingerprint is the config without the fields that only select which runs happen
  (`selectors`, e.g. the list of models), so a rerun with a longer list resumes the runs
  it shares with the first.
  """
  if checkpoint_dir is None:
    return {}
  fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in selectors}
  return {"checkpoint_dir": os.path.join(checkpoint_dir, name),
          "fingerprint": {"run": name, **fields}}


def unstack(tree: Any, index: int) -> Any:
  return jax.tree_util.tree_map(lambda x: x[index], tree)


# ------------------------------------------------------------------ configs and options


def check_training_fields(config: Any, *names: str) -> None:
  """Validates the training fields a NAF config has (UsageError naming `config.<field>`):
  integers >= 1, `learning_rate`-like fields > 0, fractions in [0, 1], `initial_beta` in
  (0, 1], `seed` >= 0."""
  for name in names:
    if name in ("learning_rate", "iaf_learning_rate", "base_scale"):
      _config.number(config, name, 0.0, strict=True)
    elif name in ("lr_decay_fraction", "anneal_fraction"):
      _config.fraction(config, name)
    elif name == "initial_beta":
      _config.number(config, name, 0.0, 1.0, strict=True)
    elif name == "seed":
      _config.integer(config, name, 0)
    else:
      _config.integer(config, name, 1)


def add_training_arguments(parser, *, schedule: bool = False, seeds: bool = False) -> None:
  """--steps and --lr; with `schedule` --anneal and --lr-decay; with `seeds` --seeds."""
  parser.add_argument("--steps", dest="num_steps", type=_cli.positive_int("--steps"),
                      default=None, metavar="STEPS", help="training steps (default: the config's)")
  parser.add_argument("--lr", dest="learning_rate", type=_cli.nonnegative_float("--lr"),
                      default=None, metavar="LR", help="Adam learning rate")
  if schedule:
    parser.add_argument("--anneal", dest="anneal_fraction", type=_cli.fraction("--anneal"),
                        default=None, metavar="FRACTION",
                        help="fraction of the steps over which the target's inverse temperature "
                             "rises from 0.01 to 1 (0: no annealing; default: the config's)")
    parser.add_argument("--lr-decay", dest="lr_decay_fraction",
                        type=_cli.fraction("--lr-decay"), default=None, metavar="FRACTION",
                        help="fraction of the steps, at the end, over which the learning rate "
                             "cosine-decays to 5%% (0: constant; default: the config's)")
  if seeds:
    parser.add_argument("--seeds", dest="num_seeds", type=_cli.positive_int("--seeds"),
                        default=None, metavar="SEEDS", help="number of seeds (a vmap axis; default: the config's)")


def add_form_argument(parser) -> None:
  """--bounded: the thesis's exact DSF / DDSF (Config field `surjective` = False)."""
  parser.add_argument("--bounded", dest="surjective", action="store_const", const=False,
                      default=None,
                      help="use DSF / DDSF exactly as Eqs. 9.8-9.10 (bounded image) instead of "
                           "the default surjective form with a linear tail")


def check_form(config: Any) -> None:
  if not isinstance(config.surjective, bool):
    _config.fail("surjective", "True or False", config.surjective)


def add_models_argument(parser, models: tuple[str, ...]) -> None:
  parser.add_argument("--models", type=_cli.name_list("--models", models), default=None,
                      help=f"comma-separated subset of {','.join(models)}")


def results(experiment: str, config: Any, metrics: Mapping[str, Any],
            reference: Mapping[str, Any], clock: _results.Stopwatch,
            arrays: Mapping[str, Any], data: str = "synthetic (built-in)",
            **extra: Any) -> dict[str, Any]:
  """The results dict of a NAF study (the shared keys of `_results.SHARED_KEYS`)."""
  return {"experiment": f"naf/{experiment}", "data": data,
          "config": dataclasses.asdict(config), "metrics": metrics, "reference": reference,
          "devices": _results.devices(), "wall_seconds": clock(), **extra,
          "arrays": dict(arrays)}


def titled_table(title: str, source: str, headers, rows) -> str:
  return f"{title}; thesis = {source}\n" + _results.format_table(headers, rows)


def plot_image_grid(out: str, name: str, images: Mapping[str, np.ndarray], rows, columns,
                    limit: float, title: Callable[[Any, str], str]) -> str:
  """One image per (row, column), `images[f"{row}/{column}"]` over [-limit, limit]^2, saved
  as `out/name` (Figs. 9.1 and 9.6)."""
  rows, columns = list(rows), list(columns)
  plt = _plots.pyplot()
  fig, axes = plt.subplots(len(rows), len(columns),
                           figsize=(2.6 * len(columns), 2.6 * len(rows)), squeeze=False)
  for i, row in enumerate(rows):
    for j, col in enumerate(columns):
      ax = axes[i, j]
      ax.imshow(images[f"{row}/{col}"], origin="lower", extent=(-limit, limit, -limit, limit),
                cmap="viridis")
      ax.set_xticks([]), ax.set_yticks([])
      ax.grid(False)
      ax.set_title(title(row, col), fontsize=9)
  return _plots.savefig(fig, out, name, dpi=110)
