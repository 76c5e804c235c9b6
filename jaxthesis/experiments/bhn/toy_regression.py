"""`jaxthesis bhn toy-regression`: the 1-D regression of Blundell et al. (Fig. 7.1).

`y = x + 0.3 sin(2 pi (x + e)) + 0.3 sin(4 pi (x + e)) + e`, `e ~ N(0, 0.02^2)`, with x
uniform on [0, 0.5]. Three models on the same data: a deterministic weight-norm MLP
(maximum likelihood), a BHN over the weight-norm scales g, and a BHN generating every
weight of a plain MLP. The predictive mean with +-1/2 standard deviation of the
predictive mean is drawn over [-0.5, 1.5]; the thesis's claim is that the band widens
away from the data, and that the two BHNs look alike.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.bhn import _common

REFERENCE = {
    "source": "Fig. 7.1",
    "expected": "the uncertainty of the BHNs increases away from the observed data "
                "(mean std outside [0, 0.5] > inside); BHN on g and BHN on all weights give "
                "very similar results",
}
MODELS = ("deterministic", "bhn-g", "bhn-all")
LABELS = {"deterministic": "deterministic net", "bhn-g": "BHN on g",
          "bhn-all": "BHN on all weights"}


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  models: tuple = MODELS
  num_train: int = 50
  data_noise: float = 0.02
  likelihood_noise: float = 0.05
  hidden: int = 50
  hypernet: str = "iaf"
  num_layers: int = 4
  hypernet_hidden: int = 200
  prior_precision: float = 1.0
  num_samples: int = 8
  num_epochs: int = 3000
  learning_rate: float = 3e-3
  init_scale: float = 0.05
  num_eval_samples: int = 200
  grid_size: int = 201

  def __post_init__(self):
    _config.integer(self, "seed", 0)
    _config.names(self, "models", MODELS)
    for field in ("num_train", "hidden", "num_samples", "num_epochs", "num_eval_samples",
                  "hypernet_hidden"):
      _config.integer(self, field, 1)
    _config.integer(self, "grid_size", 2)
    _config.integer(self, "num_layers", 0)
    _config.one_of(self, "hypernet", _common.HYPERNET_NAMES)
    if self.hypernet == "gaussian" and self.num_layers:
      _config.fail("num_layers", "0 for the gaussian hypernet", self.num_layers)
    for field in ("data_noise",):
      _config.number(self, field, 0.0)
    for field in ("likelihood_noise", "prior_precision", "learning_rate", "init_scale"):
      _config.number(self, field, 0.0, strict=True)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Fig. 7.1's setting; `quick`: 60 epochs, smaller hypernets, 32 evaluation samples."""
  base = Config(num_epochs=60, num_layers=1, hypernet_hidden=16, hidden=16, num_samples=2,
                num_eval_samples=32, grid_size=41) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  p.add_argument("--models", dest="models", default=None,
                 type=_cli.name_list("--models", MODELS))
  p.add_argument("--hypernet", dest="hypernet", default=None, choices=_common.HYPERNET_NAMES)
  p.add_argument("--num-layers", dest="num_layers", default=None,
                 type=_cli.nonnegative_int("--num-layers"))
  p.add_argument("--epochs", dest="num_epochs", default=None, type=_cli.positive_int("--epochs"))
  p.add_argument("--samples", dest="num_samples", default=None,
                 type=_cli.positive_int("--samples"))


def make_data(key, num: int, noise: float):
  """x ~ U[0, 0.5] and y of Fig. 7.1 (noise e shared by the phase and the output)."""
  import jax
  import jax.numpy as jnp

  kx, ke = jax.random.split(key)
  x = jax.random.uniform(kx, (num, 1), minval=0.0, maxval=0.5)
  e = noise * jax.random.normal(ke, (num, 1))
  y = x + 0.3 * jnp.sin(2 * jnp.pi * (x + e)) + 0.3 * jnp.sin(4 * jnp.pi * (x + e)) + e
  return x, y


def _method(model: str, config: Config, key):
  from jaxthesis import bhn

  lik = bhn.gaussian_likelihood(config.likelihood_noise)
  if model == "deterministic":
    return bhn.mle(bhn.weightnorm_mlp(1, (config.hidden,), 1, activation="tanh"), lik)
  if model == "bhn-g":
    net = bhn.weightnorm_mlp(1, (config.hidden,), 1, activation="tanh")
  else:
    net = bhn.dense_mlp(1, (config.hidden,), 1, activation="tanh")
  hyper = bhn.make_hypernet(config.hypernet, net.num_random, num_layers=config.num_layers,
                            hidden_units=config.hypernet_hidden, key=key)
  return bhn.bhn(net, hyper, lik, prior_precision=config.prior_precision,
                 num_samples=config.num_samples, init_scale=config.init_scale)


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  from jaxthesis import bhn

  clock = _results.Stopwatch()
  key = jax.random.PRNGKey(config.seed)
  data_key, *model_keys = jax.random.split(key, 1 + 2 * len(config.models))
  x, y = make_data(data_key, config.num_train, config.data_noise)
  grid = jnp.linspace(-0.5, 1.5, config.grid_size)[:, None]
  inside = np.asarray((grid[:, 0] >= 0) & (grid[:, 0] <= 0.5))
  metrics, arrays = {}, {"x_train": np.asarray(x[:, 0]), "y_train": np.asarray(y[:, 0]),
                         "grid": np.asarray(grid[:, 0])}
  for i, model in enumerate(config.models):
    build_key, train_key = model_keys[2 * i], model_keys[2 * i + 1]
    method = _method(model, config, build_key)
    _common.log(f"[bhn toy-regression] training {LABELS[model]}", progress)
    result = bhn.fit(method, train_key, {"x": x, "y": y}, num_epochs=config.num_epochs,
                     batch_size=config.num_train, learning_rate=config.learning_rate,
                     init_size=config.num_train, progress=progress, description=model,
                     checkpoint_dir=None if checkpoint_dir is None else f"{checkpoint_dir}/{model}",
                     fingerprint=dataclasses.asdict(config))
    params = _common.restart(result.state.params, 0)
    out = np.asarray(jax.jit(lambda p, k: method.sample_outputs(p, k, grid, config.num_eval_samples))(
        params, jax.random.fold_in(train_key, 1)))[..., 0]  # [S, G]
    mean, std = out.mean(0), out.std(0)
    train_pred = np.asarray(method.sample_outputs(params, train_key, x, 1))[0, :, 0]
    metrics[model] = {
        "mean_std_inside": float(std[inside].mean()),
        "mean_std_outside": float(std[~inside].mean()),
        "std_ratio_outside_inside": float(std[~inside].mean() / max(std[inside].mean(), 1e-12)),
        "train_rmse": float(np.sqrt(np.mean((train_pred - np.asarray(y[:, 0])) ** 2))),
        "final_loss": float(result.history.losses["loss"][0, -1]),
    }
    arrays[f"{model}_mean"], arrays[f"{model}_std"] = mean, std
  bayes = [m for m in config.models if m != "deterministic"]
  metrics["band_widens_away_from_data"] = bool(bayes) and all(
      metrics[m]["mean_std_outside"] > metrics[m]["mean_std_inside"] for m in bayes)
  return {"experiment": "bhn/toy-regression",
          "data": f"{config.num_train} points of Blundell et al.'s 1-D toy (x in [0, 0.5])",
          "config": config, "metrics": metrics, "reference": REFERENCE,
          "wall_seconds": clock(), "arrays": arrays}


save = _results.save


def table(results: dict[str, Any]) -> str:
  m = results["metrics"]
  rows = [[LABELS[k], f"{v['mean_std_inside']:.4f}", f"{v['mean_std_outside']:.4f}",
           f"{v['std_ratio_outside_inside']:.2f}", f"{v['train_rmse']:.4f}"]
          for k, v in m.items() if k in LABELS]
  text = _results.format_table(["model", "std in [0,0.5]", "std outside", "ratio", "train RMSE"],
                               rows)
  return (f"{text}\nband widens away from the data: {m['band_widens_away_from_data']}\n"
          f"{REFERENCE['source']} (thesis): {REFERENCE['expected']}")


def plot(out: str) -> list[str]:
  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  models = [m for m in MODELS if f"{m}_mean" in arrays]
  fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.2), squeeze=False)
  grid = arrays["grid"]
  for ax, model in zip(axes[0], models):
    mean, std = arrays[f"{model}_mean"], arrays[f"{model}_std"]
    ax.fill_between(grid, mean - 0.5 * std, mean + 0.5 * std, alpha=0.35, label="±½ std")
    ax.plot(grid, mean, lw=1.2)
    ax.scatter(arrays["x_train"], arrays["y_train"], marker="x", c="red", s=14)
    ax.set_title(LABELS[model])
    ax.set_ylim(-1.5, 2.5)
  fig.suptitle(f"{REFERENCE['source']}: predictive mean ± ½ std", fontsize=9)
  return [_plots.savefig(fig, out, "toy_regression.png")]
