"""`jaxthesis bhn multimodal`: an over-parameterized linear net `y_hat = a b x` (Fig. 7.2).

Fit to `y = x + e`, the likelihood depends on (a, b) only through `a b`, so the exact
posterior has two symmetric modes around `a = b = 1` and `a = b = -1` (the hyperbola
`a b = 1`, both branches). A BHN with an expressive hypernet should put mass on both; a
factorial Gaussian ("gaussian:0") cannot. Reported: the fraction of posterior samples in
each branch (`a, b > 0` vs `a, b < 0`) and near each mode.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.bhn import _common

REFERENCE = {
    "source": "Fig. 7.2",
    "expected": "the Bayesian hypernetwork assigns significant probability mass to both modes "
                "a = b = 1 and a = b = -1 (here: each branch >= 20 % of the samples)",
    "min_fraction_per_mode": 0.2,
}


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  hypernets: tuple = ("realnvp:8", "iaf:8", "dsf:4", "gaussian:0")
  num_train: int = 20
  noise: float = 1.0
  prior_precision: float = 1.0
  hypernet_hidden: int = 200
  num_samples: int = 32
  num_epochs: int = 3000
  learning_rate: float = 1e-3
  init_scale: float = 1.0
  num_eval_samples: int = 5000
  mode_radius: float = 0.5

  def __post_init__(self):
    _config.integer(self, "seed", 0)
    _common.check_specs(self, "hypernets")
    if any(s in _common.BASELINES for s in self.hypernets):
      _config.fail("hypernets", "hypernet specs <name>:<K> (no baselines)", self.hypernets)
    for field in ("num_train", "hypernet_hidden", "num_samples", "num_epochs",
                  "num_eval_samples"):
      _config.integer(self, field, 1)
    for field in ("noise", "prior_precision", "learning_rate", "init_scale", "mode_radius"):
      _config.number(self, field, 0.0, strict=True)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Fig. 7.2's model; `quick`: two small hypernets, 100 epochs."""
  base = Config(hypernets=("realnvp:2", "gaussian:0"), hypernet_hidden=16, num_samples=8,
                num_epochs=100, num_eval_samples=1000) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  _common.add_specs_argument(p, "--hypernets", "hypernets", help=_common.HYPERNETS_HELP)
  p.add_argument("--epochs", dest="num_epochs", default=None, type=_cli.positive_int("--epochs"))
  p.add_argument("--samples", dest="num_samples", default=None,
                 type=_cli.positive_int("--samples"))


def product_net():
  """`y_hat = a b x` as a `PrimaryNet` with theta = (a, b) and no point parameters."""
  import jax.numpy as jnp
  from jaxthesis import bhn

  return bhn.PrimaryNet(
      init=lambda key, x: ({}, jnp.ones(2)),
      features=lambda params, x: x,
      head=lambda params, theta, h, key=None, dropout_rate=0.0: theta[0] * theta[1] * h,
      num_random=2, input_shape=(1,), num_outputs=1)


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  from jaxthesis import bhn

  clock = _results.Stopwatch()
  key = jax.random.PRNGKey(config.seed)
  data_key, *keys = jax.random.split(key, 1 + 2 * len(config.hypernets))
  kx, ke = jax.random.split(data_key)
  x = jax.random.uniform(kx, (config.num_train, 1), minval=-1.0, maxval=1.0)
  y = x + config.noise * jax.random.normal(ke, x.shape)
  net = product_net()
  lik = bhn.gaussian_likelihood(config.noise)
  metrics, arrays = {}, {"x_train": np.asarray(x[:, 0]), "y_train": np.asarray(y[:, 0])}
  for i, spec in enumerate(config.hypernets):
    name, k = _common.parse_spec(spec)
    hyper = bhn.make_hypernet(name, 2, num_layers=k, hidden_units=config.hypernet_hidden,
                              key=keys[2 * i])
    # The affine layer starts at (0, 0) (between the modes) with scale init_scale.
    method = bhn.bhn(net, hyper, lik, prior_precision=config.prior_precision,
                     num_samples=config.num_samples, init_scale=config.init_scale)
    method = method._replace(init=lambda key, x_init, hyper=hyper: {
        "net": {}, "hyper": hyper.init(key, loc=0.0, scale=config.init_scale)})
    _common.log(f"[bhn multimodal] training hypernet {spec}", progress)
    result = bhn.fit(method, keys[2 * i + 1], {"x": x, "y": y}, num_epochs=config.num_epochs,
                     batch_size=config.num_train, learning_rate=config.learning_rate,
                     anneal=False, init_size=config.num_train, progress=progress,
                     description=spec,
                     checkpoint_dir=None if checkpoint_dir is None else f"{checkpoint_dir}/{i}",
                     fingerprint=dataclasses.asdict(config))
    params = _common.restart(result.state.params, 0)
    theta, _ = jax.jit(hyper.sample_and_log_prob, static_argnums=2)(
        params["hyper"], jax.random.fold_in(keys[2 * i + 1], 7), (config.num_eval_samples,))
    theta = np.asarray(theta)
    a, b = theta[:, 0], theta[:, 1]
    pos, neg = (a > 0) & (b > 0), (a < 0) & (b < 0)
    near = lambda m: float(np.mean(np.hypot(a - m, b - m) < config.mode_radius))
    metrics[spec] = {
        "fraction_positive_branch": float(pos.mean()), "fraction_negative_branch": float(neg.mean()),
        "fraction_near_plus_one": near(1.0), "fraction_near_minus_one": near(-1.0),
        "mean_ab": float(np.mean(a * b)),
        "both_modes": bool(min(pos.mean(), neg.mean()) >= REFERENCE["min_fraction_per_mode"]),
        "final_loss": float(np.nanmean(result.history.losses["loss"][0, -50:])),
    }
    arrays[f"samples_{i}"] = theta[:2000]
  return {"experiment": "bhn/multimodal",
          "data": f"{config.num_train} points y = x + N(0, {config.noise}^2), x ~ U[-1, 1]",
          "config": config, "metrics": metrics, "reference": REFERENCE,
          "wall_seconds": clock(), "arrays": arrays}


save = _results.save


def table(results: dict[str, Any]) -> str:
  rows = [[spec, f"{m['fraction_positive_branch']:.1%}", f"{m['fraction_negative_branch']:.1%}",
           f"{m['fraction_near_plus_one']:.1%}", f"{m['fraction_near_minus_one']:.1%}",
           f"{m['mean_ab']:.3f}", "yes" if m["both_modes"] else "no"]
          for spec, m in results["metrics"].items()]
  text = _results.format_table(["hypernet", "a,b>0", "a,b<0", "near (1,1)", "near (-1,-1)",
                                "E[ab]", "both ≥ 20 %"], rows)
  return f"{text}\n{REFERENCE['source']} (thesis): {REFERENCE['expected']}"


def plot(out: str) -> list[str]:
  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  specs = list(results["config"]["hypernets"])
  fig, axes = plt.subplots(1, len(specs), figsize=(3.2 * len(specs), 3.2), squeeze=False)
  t = np.linspace(0.2, 3, 100)
  for i, (ax, spec) in enumerate(zip(axes[0], specs)):
    s = arrays[f"samples_{i}"]
    ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.3)
    for sign in (1, -1):
      ax.plot(sign * t, sign / t, "r--", lw=0.8)
    ax.set_xlim(-3, 3)
    ax.set_ylim(-3, 3)
    ax.set_xlabel("a")
    ax.set_ylabel("b")
    m = results["metrics"][spec]
    ax.set_title(f"{spec}: {m['fraction_positive_branch']:.0%} / {m['fraction_negative_branch']:.0%}")
  fig.suptitle(f"{REFERENCE['source']}: posterior samples of (a, b)", fontsize=9)
  return [_plots.savefig(fig, out, "multimodal.png")]
