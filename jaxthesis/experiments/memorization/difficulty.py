"""`jaxthesis memorization difficulty`: per-example difficulty after one epoch (Fig. 3.1).

An MLP is trained for a single epoch from `restarts` random initializations and
shufflings on real MNIST, on randX (every input replaced by Gaussian noise with the data's
per-pixel mean and variance) and on randY (every label replaced by a uniform random one).
All 3 × restarts runs are one vmapped program (the data set is a per-restart index).
Each example's difficulty is its misclassification rate over the runs (against its own,
possibly random, training label), sorted. Reference curve: `num_scored` draws of
Binomial(restarts, p̄)/restarts with p̄ the mean P(correct) on randX, which is what the
curve would look like if every randX example were equally hard.

Headline number: the *dispersion ratio* Var_x(rate) / (p̄(1−p̄)/restarts), 1 for
examples that are all equally difficult (the Binomial curve) and larger when some are
consistently easy or hard.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _config, _plots, _results
from jaxthesis.experiments.memorization import _common as mc

REFERENCE = {
    "source": "Fig. 3.1",
    "expected": "per-example misclassification after one epoch (100 runs) is much more variable "
                "on real data (many examples always right, some always wrong) than on noise; "
                "the randX curve closely follows Binomial(100, p̄) (all noise inputs equally "
                "hard); randY is more variable than Binomial (some shared patterns)",
    "restarts": 100, "examples": 1000,
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis memorization difficulty` run."""
  data: str = "auto"
  data_dir: Optional[str] = None
  num_train: int = 4000       # training examples (one epoch over them)
  num_scored: int = 1000      # the first this many training examples are scored (Fig. 3.1)
  restarts: int = 100         # initializations and shufflings per data set
  width: int = 512            # hidden units per layer (thesis: 4,096; reduced for CPU)
  batch_size: int = 16
  learning_rate: float = 0.01  # thesis 3.2: SGD, lr 0.01
  seed: int = 0

  def __post_init__(self):
    mc.check_data_fields(self)
    for field in ("num_train", "num_scored", "restarts", "width", "batch_size"):
      _config.integer(self, field, 1)
    _config.number(self, "learning_rate", 0.0, strict=True)
    if self.num_scored > self.num_train:
      _config.fail("num_scored", f"<= num_train ({self.num_train})", self.num_scored)
    if self.batch_size > self.num_train:
      _config.fail("batch_size", f"<= num_train ({self.num_train})", self.batch_size)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """4,000 digits, 100 restarts, width 512; `quick`: 400 digits, 4 restarts, width 32."""
  base = (Config(num_train=400, num_scored=200, restarts=4, width=32) if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  from jaxthesis.experiments import _cli
  mc.add_training_arguments(p, "num_train", "restarts", "width", "batch_size", "learning_rate")
  p.add_argument("--num-scored", dest="num_scored", type=_cli.positive_int("--num-scored"),
                 default=None, help="score the first this many training examples")


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains 3 × restarts MLPs for one epoch in one program; returns the results."""
  import jax
  import jax.numpy as jnp
  from jaxthesis import engine
  from jaxthesis.memorization import models, train

  clock = _results.Stopwatch()
  x, y, _, _, data = mc.load_mnist_vectors(config, config.num_train)
  key = jax.random.PRNGKey(config.seed)
  settings = [(kind, 0.0 if kind == "real" else 1.0) for kind in mc.KINDS]
  xs, ys, _ = mc.corrupted_stack(jax.random.fold_in(key, 1), x, y, settings)
  model = models.mlp(x.shape[1], 10, config.width)
  task = train.make_classifier_task(model, max_examples=config.num_train,
                                    batch_size=config.batch_size)
  r = config.restarts
  hp = train.classifier_hparams(3 * r, dataset=np.repeat(np.arange(3), r), width=config.width,
                                num_examples=config.num_train,
                                learning_rate=config.learning_rate)
  steps = config.num_train // config.batch_size
  runner = engine.Runner(task, steps, eval_every=steps, progress=progress,
                         description="difficulty")
  keys = jax.random.split(jax.random.fold_in(key, 2), 3 * r)
  out = runner.run(keys, hp, {"train_x": jnp.asarray(xs), "train_y": jnp.asarray(ys)},
                   **mc.checkpoint_args(checkpoint_dir, "difficulty", config))

  n = config.num_scored
  scored = jax.jit(jax.vmap(lambda s, d, w: train.per_example_correct(
      model, s, w, jnp.asarray(xs)[d, :n], jnp.asarray(ys)[d, :n])[1]))
  correct = np.asarray(scored(out.state, hp.dataset, hp.width)).reshape(3, r, n)
  rates = 1.0 - correct.mean(axis=1)  # [3, n] misclassification rate per example
  p_bar = float(correct[1].mean())    # randX mean P(correct)
  binomial = 1.0 - np.asarray(jax.random.binomial(jax.random.fold_in(key, 3), r, p_bar,
                                                  (n,))) / r
  metrics, arrays = {}, {"binomial_randX": np.sort(binomial)}
  binom_var = max(p_bar * (1 - p_bar) / r, 1e-12)
  for i, kind in enumerate(mc.KINDS):
    rate = rates[i]
    arrays[kind] = np.sort(rate)
    p = 1.0 - rate.mean()
    metrics[kind] = {
        "mean_misclassification": float(rate.mean()),
        "std_misclassification": float(rate.std()),
        "dispersion_ratio": float(rate.var() / max(p * (1 - p) / r, 1e-12)),
        "always_correct": float(np.mean(rate == 0.0)),
        "always_wrong": float(np.mean(rate == 1.0)),
        "final_train_acc": float(np.mean(out.history.evals["train_acc"][i * r:(i + 1) * r, -1])),
    }
  metrics["binomial_randX"] = {"p_bar": p_bar, "std_misclassification": float(binomial.std()),
                               "dispersion_ratio": float(binomial.var() / binom_var)}
  metrics["ks_randX_vs_binomial"] = float(np.max(np.abs(np.sort(rates[1]) - np.sort(binomial))))
  return mc.results("difficulty", config, data, metrics, REFERENCE, clock, arrays,
                    steps_per_run=steps)


save = _results.save


def table(results: dict[str, Any]) -> str:
  m = results["metrics"]
  rows = [[k, f"{m[k]['mean_misclassification']:.3f}", f"{m[k]['std_misclassification']:.3f}",
           f"{m[k]['dispersion_ratio']:.2f}", f"{m[k]['always_correct']:.3f}",
           f"{m[k]['always_wrong']:.3f}"] for k in mc.KINDS]
  b = m["binomial_randX"]
  rows.append(["Binomial(R, p̄ randX)", f"{1 - b['p_bar']:.3f}",
               f"{b['std_misclassification']:.3f}", f"{b['dispersion_ratio']:.2f}", "", ""])
  expected = ("thesis: real far more variable than noise; randX ≈ Binomial "
              f"(max gap of sorted curves here {m['ks_randX_vs_binomial']:.3f})")
  return mc.titled_table("Per-example misclassification after one epoch", REFERENCE["source"],
                         ("data", "mean", "std over examples", "dispersion / Binomial",
                          "always right", "always wrong"), rows) + "\n" + expected


def plot(out: str) -> list[str]:
  """Fig. 3.1: sorted per-example misclassification rates, from the saved files."""
  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for kind in mc.KINDS:
    ax.plot(arrays[kind], label=kind)
  ax.plot(arrays["binomial_randX"], "k--", label="Binomial (randX p̄)")
  ax.set_xlabel("example (sorted)")
  ax.set_ylabel("misclassification rate")
  ax.set_title(f"{REFERENCE['source']}: difficulty after one epoch "
               f"({results['config']['restarts']} runs)")
  ax.legend()
  return [_plots.savefig(fig, out, "difficulty.png")]
