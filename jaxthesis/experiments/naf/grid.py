"""`jaxthesis naf grid`: maximum-likelihood fit of Gaussian grids (Fig. 9.6 of the thesis).

MAF-affine (6 layers, reversed orderings) vs MAF-DSF vs MAF-DDSF on a mixture of n x n
Gaussians over [-5, 5]^2, n in {2, 5, 10} (Section 9.6.1). Expected (thesis): the affine
flow collapses to few modes, the neural flows recover the grid. `run` returns the test
log-likelihoods, the modes recovered and the fitted densities on a grid (the figure's
images); `plot` redraws Fig. 9.6 from the saved files.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _results
from jaxthesis.experiments.naf import _common as nc

REFERENCE = {
    "source": "Fig. 9.6",
    "expected": "the affine flow collapses onto few modes; DSF/DDSF recover the grid, up to "
                "the 10x10 grid with 100 modes (Section 9.6.1)",
    "grids": ["2x2", "5x5", "10x10"],
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis naf grid` run."""
  modes: tuple[int, ...] = (2, 5, 10)   # modes per dimension
  models: tuple[str, ...] = ("affine", "dsf", "ddsf")
  num_steps: int = 5000
  batch_size: int = 256
  learning_rate: float = 1e-2
  hidden: int = 64
  num_test: int = 4000
  num_samples: int = 2000       # flow samples counted by `modes_recovered`
  image_size: int = 160         # the densities are drawn on image_size^2 points
  image_limit: float = 6.0      # ... of [-image_limit, image_limit]^2
  surjective: bool = True          # False: the thesis's bounded DSF / DDSF
  seed: int = 0

  def __post_init__(self):
    _config.numbers(self, "modes", 2, integers=True)
    _config.names(self, "models", tuple(nc.MODELS))
    nc.check_form(self)
    nc.check_training_fields(self, "num_steps", "batch_size", "learning_rate", "hidden",
                             "num_test", "num_samples", "seed")
    _config.integer(self, "image_size", 2)
    _config.number(self, "image_limit", 0.0, strict=True)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The thesis's grids (5,000 steps); `quick`: the 2x2 grid, 60 steps, small flows."""
  base = (Config(modes=(2,), num_steps=60, batch_size=64, hidden=16, num_test=500,
                 num_samples=300) if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  nc.add_training_arguments(p)
  nc.add_form_argument(p)
  nc.add_models_argument(p, tuple(nc.MODELS))
  p.add_argument("--modes", type=_cli.number_list("--modes", int, minimum=2), default=None,
                 help="comma-separated modes per dimension, e.g. 2,5,10")


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Fits every model to every grid; returns the results (no files but checkpoints)."""
  import jax
  import jax.numpy as jnp

  clock = _results.Stopwatch()
  axis, pts, _ = nc.grid_points(config.image_limit, config.image_size)
  side = len(axis)
  metrics, arrays = {}, {}
  for n in config.modes:
    grid = f"{n}x{n}"
    target = nc.GaussianGrid(n)
    test = target.sample(jax.random.PRNGKey(config.seed + 1000 + n), config.num_test)
    metrics[grid] = {"true_test_ll": float(target.log_prob(test).mean())}
    arrays[f"density/{grid}/target"] = np.exp(np.asarray(
        target.log_prob(jnp.asarray(pts)))).reshape(side, side)
    for model in config.models:
      flow = nc.build_flow(model, 2, "maf", config.hidden, config.surjective)

      def evaluate(params, data, flow=flow):
        return {"test_ll": flow.distribution(params).log_prob(data).mean()}

      task = nc.flow_task(flow, nc.max_likelihood_loss(flow, target, config.batch_size),
                          config.learning_rate, evaluate)
      result = nc.run_seeds(task, config.num_steps, config.seed, 1, test, progress,
                            f"grid {grid} {model}",
                            **nc.checkpoint_args(checkpoint_dir, f"{grid}-{model}", config,
                                                 ("modes", "models")))
      dist = flow.distribution(nc.unstack(result.state[0], 0))
      samples = np.asarray(jax.jit(lambda k: dist.sample(seed=k, sample_shape=(
          config.num_samples,)))(jax.random.PRNGKey(config.seed + 7)))
      metrics[grid][model] = {
          "test_ll": float(result.history.evals["test_ll"][0, -1]),
          "modes_recovered": target.modes_recovered(samples),
          "num_modes": n * n,
          "final_train_nll": float(np.nanmean(result.history.losses["loss"][0, -20:])),
      }
      arrays[f"density/{grid}/{model}"] = np.exp(np.asarray(
          jax.jit(dist.log_prob)(jnp.asarray(pts)))).reshape(side, side)
  return nc.results("grid", config, metrics, REFERENCE, clock, arrays)


save = _results.save


def table(results: dict[str, Any]) -> str:
  config, rows = results["config"], []
  for n in config["modes"]:
    entry = results["metrics"][f"{n}x{n}"]
    for model in config["models"]:
      m = entry[model]
      rows.append([f"{n}x{n}", f"MAF-{model}", f"{m['test_ll']:.3f}",
                   f"{entry['true_test_ll']:.3f}", f"{m['modes_recovered']}/{m['num_modes']}",
                   "few modes" if model == "affine" else "all modes"])
  return nc.titled_table("Gaussian grids, MAF maximum likelihood", REFERENCE["source"],
                         ("grid", "model", "test LL", "true LL", "modes recovered",
                          f"thesis ({REFERENCE['source']})"), rows)


def plot(out: str) -> list[str]:
  """Fig. 9.6: the true and fitted densities, one row per grid, from the saved files."""
  results, arrays = _results.load(out)
  config = results["config"]
  title = lambda grid, col: f"{grid} {'true' if col == 'target' else 'MAF-' + col}"
  images = {k[len("density/"):]: v for k, v in arrays.items() if k.startswith("density/")}
  return [nc.plot_image_grid(out, "grid_densities.png", images,
                             [f"{n}x{n}" for n in config["modes"]],
                             ["target"] + config["models"], config["image_limit"], title)]
