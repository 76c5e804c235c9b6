"""`jaxthesis rex risk-plane`: V-REx flattens the "risk plane" on Colored MNIST (Fig. 5.2).

Trains V-REx with β ∈ {0, 1, 10, 100, 1000, 10000} (Eq. 5.8; the per-domain-mean
objective of `jaxthesis.rex.train` uses penalty weight β/m) as one program, then scores
every model on domains whose P(Y=0 | colour=red) sweeps [0, 1]. The domains share the
test digits, the label noise and one uniform draw u per example (colour flipped iff
u < e), so each model's accuracy and risk are exactly linear in P(Y=0 | red) = 1 - e:
a line, whose slope is what V-REx flattens. Training domains (P = 0.8 and 0.9) are the
dots.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.rex import _sweeps

BETAS = (0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0)

REFERENCE = {
    "source": "Fig. 5.2",
    "numbers": "none in the text: accuracies and risks after 500 epochs, plotted for several β",
    "expected": "larger β gives a flatter risk line (smaller |slope|) and more even accuracy "
                "across P(Y=0|red); β = 100 has the best worst-case training risk (the "
                "solution DRO would prefer)",
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis rex risk-plane` run."""
  betas: tuple = BETAS              # V-REx β of Eq. 5.8
  grid: int = 11                    # P(Y=0 | red) values in [0, 1]
  restarts: int = 1                 # per β
  hidden: Optional[int] = None      # MLP width (None: the paper's 390)
  step_fraction: float = 1.0        # V-REx's steps and anneal step, scaled
  noise: Optional[str] = None       # fixed | population; None: population on built-in data
  data: str = "auto"
  data_dir: Optional[str] = None
  seed: int = 0

  def __post_init__(self):
    _config.numbers(self, "betas", 0.0, distinct=True)
    _config.integer(self, "grid", 2)
    _config.integer(self, "restarts", 1)
    _config.number(self, "step_fraction", 0.0, 1.0, strict=True)
    _sweeps.check_data_fields(self)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The paper's protocol; `quick`: width 32, 5 grid points, a tenth of the steps."""
  base = Config(hidden=32, grid=5, step_fraction=0.1) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  p.add_argument("--betas", type=_cli.number_list("--betas"), default=None,
                 help="comma-separated V-REx β of Eq. 5.8 (default 0,1,10,100,1000,10000)")
  p.add_argument("--restarts", type=_cli.positive_int("--restarts"), default=None,
                 help="restarts per β (default 1)")
  _sweeps.add_data_args(p, noise_default="population")


def sweep_eval_sampler(flips):
  """An `EvalSampler`: the two training domains' fixed draws and the test digits at each
  colour-flip rate in `flips`, with common random numbers across rates."""
  import jax
  import jax.numpy as jnp
  from jaxthesis.rex import colored_mnist

  flips = tuple(float(f) for f in flips)

  def sample(key, data):
    x, y = colored_mnist.color_domains(key, data)
    sets = {f"train_{e}": (x[e], y[e], data.train_mask[e]) for e in range(y.shape[0])}
    noise_key, color_key = jax.random.split(jax.random.fold_in(key, 1))
    n = data.test_digits.shape[0]
    labels = (data.test_digits < 5).astype(jnp.float32)
    labels = jnp.abs(labels - jax.random.bernoulli(noise_key, data.label_noise, (n,)))
    u = jax.random.uniform(color_key, (n,))
    for i, flip in enumerate(flips):
      colors = jnp.abs(labels - (u < flip))
      xs = jnp.concatenate([data.test_pixels * (colors == 0)[:, None],
                            data.test_pixels * (colors == 1)[:, None]], axis=-1)
      sets[f"sweep_{i}"] = (xs, labels)
    return sets

  return sample



def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains V-REx for every β × restart as one program and scores it on the swept
  domains; returns the results (nothing is written but checkpoints)."""
  import jax
  from jaxthesis import engine
  from jaxthesis.experiments.rex import cmnist
  from jaxthesis.rex import colored_mnist, train

  clock = _results.Stopwatch()
  source, data = _sweeps.load_cmnist(config)
  noise = _sweeps.resolve_noise(config.noise, source)
  hp = cmnist.method_hparams("vrex", config.step_fraction, config.hidden)
  p_red = np.linspace(0.0, 1.0, config.grid)          # P(Y=0 | red) of each swept domain
  m = int(data.train_digits.shape[0])
  betas = np.repeat(np.asarray(config.betas, np.float32), config.restarts)
  task = train.make_domain_task("vrex", hidden=hp.hidden, input_dim=392, num_domains=m,
                                sample_train=colored_mnist.sample_train_domains,
                                sample_eval=sweep_eval_sampler(1.0 - p_red),
                                population=(noise == "population"))
  hparams = train.domain_hparams(len(betas), learning_rate=hp.learning_rate,
                                 l2_weight=hp.l2_weight, penalty_weight=betas / m,
                                 penalty_anneal_iters=hp.penalty_anneal_iters)
  _sweeps.log(f"risk plane on {source} data, {noise} noise: V-REx β ∈ {list(config.betas)} "
              f"× {config.restarts} restarts, width {hp.hidden}, {hp.steps} steps")
  runner = engine.Runner(task, hp.steps, eval_every=hp.steps, chunk_size=max(1, hp.steps // 5),
                         progress=progress, description=f"V-REx ({len(betas)} β)")
  result = _sweeps.train(runner, jax.random.split(jax.random.PRNGKey(config.seed), len(betas)),
                         hparams, data, checkpoint_dir, "vrex", _sweeps.fingerprint(config, noise))
  final = {k: np.asarray(v[:, -1]).reshape(len(config.betas), config.restarts)
           for k, v in result.history.evals.items()}
  train_p = (1.0 - np.asarray(data.train_color_flip)).tolist()
  metrics, arrays = {}, {"p_red": p_red}
  for b, beta in enumerate(config.betas):
    acc = np.stack([final[f"sweep_{i}_acc"][b] for i in range(config.grid)], -1)   # [R, G]
    risk = np.stack([final[f"sweep_{i}_nll"][b] for i in range(config.grid)], -1)
    arrays[f"{beta:g}/acc"], arrays[f"{beta:g}/risk"] = 100 * acc, risk
    acc, risk = acc.mean(0), risk.mean(0)
    metrics[f"{beta:g}"] = {
        "beta": beta, "p_red": p_red.tolist(), "acc": (100 * acc).tolist(), "risk": risk.tolist(),
        "risk_slope": float(risk[-1] - risk[0]),   # risk(P=1) - risk(P=0)
        "acc_range": float(100 * (acc.max() - acc.min())),
        "train_p_red": train_p,
        "train_acc": [float(100 * final[f"train_{e}_acc"][b].mean()) for e in range(m)],
        "train_risk": [float(final[f"train_{e}_nll"][b].mean()) for e in range(m)],
        "test_acc": float(100 * np.interp(0.1, p_red, acc)),
        "worst_train_risk": float(max(final[f"train_{e}_nll"][b].mean() for e in range(m)))}
  return _sweeps.results("rex/risk-plane", config, source, noise, metrics, REFERENCE, clock,
                         arrays, hparams=dataclasses.asdict(hp))


save = _results.save


def table(results: dict[str, Any]) -> str:
  rows = []
  for m in results["metrics"].values():
    rows.append([f"{m['beta']:g}", f"{m['acc'][0]:.1f}", f"{m['acc'][-1]:.1f}",
                 f"{m['acc_range']:.1f}", f"{m['risk'][0]:.3f}", f"{m['risk'][-1]:.3f}",
                 f"{m['risk_slope']:+.3f}",
                 " / ".join(f"{a:.1f}" for a in m["train_acc"]),
                 f"{m['worst_train_risk']:.3f}", f"{m['test_acc']:.1f}"])
  head = (f"Risk plane of V-REx on Colored MNIST ({results['data']} data, {results['noise']} "
          f"noise): accuracy % and risk on domains with P(Y=0|red) from 0 to 1\n"
          f"thesis {REFERENCE['source']}: {results['reference']['expected']}")
  return head + "\n" + _results.format_table(
      ["β", "acc P=0", "acc P=1", "acc range", "risk P=0", "risk P=1", "risk slope",
       "train acc (P=.8/.9)", "worst train risk", "test acc (P=.1)"], rows)


def plot(out: str) -> list[str]:
  """Accuracy and risk against P(Y=0|red) per β, training domains as dots."""
  results, _ = _results.load(out)
  plt = _plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for m in results["metrics"].values():
    line, = axes[0].plot(m["p_red"], m["acc"], label=f"β = {m['beta']:g}")
    axes[0].scatter(m["train_p_red"], m["train_acc"], color=line.get_color(), zorder=3)
    axes[1].plot(m["p_red"], m["risk"], color=line.get_color())
    axes[1].scatter(m["train_p_red"], m["train_risk"], color=line.get_color(), zorder=3)
  for ax, label in zip(axes, ("accuracy (%)", "risk (cross-entropy)")):
    ax.set_xlabel("P(Y = 0 | color = red)")
    ax.set_ylabel(label)
  axes[0].legend()
  fig.suptitle(f"V-REx risk plane ({results['data']}, {results['noise']} noise) — cf. thesis "
               f"{REFERENCE['source']}; dots: training domains", fontsize=9)
  return [_plots.savefig(fig, out, "risk_plane.png")]
