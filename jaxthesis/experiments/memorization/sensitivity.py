"""`jaxthesis memorization sensitivity`: loss-sensitivity on real vs random data (Figs. 3.3, 3.4).

A 2-layer MLP with 16 units is trained with SGD on 1,000 MNIST digits downscaled to 14×14,
with real or random (Gaussian, per-pixel mean and variance) inputs and with normal or
unique-class labels (every example its own class): four runs, one vmapped program (the
output layer has N logits; normal-label runs mask all but 10). At every step the
loss-sensitivities g_x^t = ‖∂L_t/∂x‖₁ of the previous `unroll` minibatches' examples are
computed by differentiating L_t through the unrolled SGD updates
(`jaxthesis.memorization.sensitivity`); ḡ_x is their average. The Gini coefficient of ḡ
over examples is reported through training (Fig. 3.3), and the class-specific ḡ_ij for the
normal-label runs (Fig. 3.4).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _config, _plots, _results
from jaxthesis.experiments.memorization import _common as mc

REFERENCE = {
    "source": "Figs. 3.3, 3.4",
    "expected": "the Gini coefficient of ḡ_x is higher on real data (a few examples carry high "
                "sensitivity) than on random inputs (sensitive to most examples), with normal "
                "labels and with unique-class labels; ḡ_ij is largest on the diagonal, and more "
                "spread over off-diagonal cells for real data than for random data",
}
RUNS = ("real/normal", "random/normal", "real/unique", "random/unique")


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis memorization sensitivity` run."""
  data: str = "auto"
  data_dir: Optional[str] = None
  num_train: int = 1000       # thesis: 1,000 14×14 digits
  width: int = 16             # thesis: 2 layers of 16 units
  batch_size: int = 10
  learning_rate: float = 0.1
  epochs: int = 20
  unroll: int = 1             # SGD updates differentiated through
  eval_every: int = 100
  seed: int = 0

  def __post_init__(self):
    mc.check_data_fields(self)
    for field in ("num_train", "width", "batch_size", "epochs", "unroll", "eval_every"):
      _config.integer(self, field, 1)
    _config.number(self, "learning_rate", 0.0, strict=True)
    if self.batch_size > self.num_train:
      _config.fail("batch_size", f"<= num_train ({self.num_train})", self.batch_size)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """1,000 digits, 20 epochs; `quick`: 100 digits, 2 epochs."""
  base = Config(num_train=100, epochs=2, eval_every=5) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  from jaxthesis.experiments import _cli
  mc.add_training_arguments(p, "num_train", "width", "batch_size", "learning_rate", "epochs",
                            "eval_every")
  p.add_argument("--unroll", dest="unroll", type=_cli.positive_int("--unroll"), default=None,
                 help="SGD updates differentiated through (default 1)")


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  from jaxthesis import engine
  from jaxthesis.memorization import corruption, sensitivity

  clock = _results.Stopwatch()
  x, y, _, _, data = mc.load_mnist_vectors(config, config.num_train)
  small = np.asarray(corruption.downscale(x.reshape(-1, 28, 28), 2)).reshape(len(x), -1)
  key = jax.random.PRNGKey(config.seed)
  noise, _ = corruption.random_inputs(jax.random.fold_in(key, 1), jnp.asarray(small), 1.0)
  n = config.num_train
  unique = np.asarray(corruption.unique_class_labels(n))
  inputs = np.stack([small, np.asarray(noise), small, np.asarray(noise)])
  labels = np.stack([y, y, unique, unique]).astype(np.int32)
  task = sensitivity.make_sensitivity_task(
      num_examples=n, input_dim=small.shape[1], max_classes=n, width=config.width,
      batch_size=config.batch_size, learning_rate=config.learning_rate, unroll=config.unroll,
      class_matrix_size=10)
  hp = sensitivity.SensitivityHParams(dataset=jnp.arange(4, dtype=jnp.int32),
                                      num_classes=jnp.array([10, 10, n, n], jnp.int32))
  steps = (n // config.batch_size) * config.epochs
  runner = engine.Runner(task, steps, eval_every=config.eval_every, progress=progress,
                         description="sensitivity")
  keys = jnp.stack([jax.random.fold_in(key, 2)] * 4)  # same init and order for every run
  out = runner.run(keys, hp, {"inputs": jnp.asarray(inputs), "labels": jnp.asarray(labels)},
                   **mc.checkpoint_args(checkpoint_dir, "sensitivity", config))
  g_bar, class_matrix = (np.asarray(a) for a in sensitivity.mean_sensitivity(out.state))
  gini = out.history.evals["gini"]
  half = gini.shape[1] // 2
  metrics = {}
  for i, name in enumerate(RUNS):
    metrics[name] = {"final_gini": float(gini[i, -1]), "mean_gini_2nd_half": float(
        np.nanmean(gini[i, half:])), "final_train_acc": float(out.history.evals["train_acc"][i, -1])}
  for i, name in enumerate(RUNS[:2]):
    m = class_matrix[i]
    metrics[name]["diagonal_share"] = float(np.trace(m) / m.sum())
  metrics["gini_real_above_random"] = {
      labels_: metrics[f"real/{labels_}"]["final_gini"] > metrics[f"random/{labels_}"]["final_gini"]
      for labels_ in ("normal", "unique")}
  metrics["real_spreads_more_off_diagonal"] = (metrics["real/normal"]["diagonal_share"]
                                               < metrics["random/normal"]["diagonal_share"])
  arrays = {"eval_steps": out.history.eval_steps, "gini": gini, "g_bar": g_bar,
            "class_matrix": class_matrix[:2]}
  return mc.results("sensitivity", config, data + ", downscaled to 14×14", metrics, REFERENCE,
                    clock, arrays, runs=list(RUNS))


save = _results.save


def table(results: dict[str, Any]) -> str:
  m = results["metrics"]
  rows = [[name, f"{m[name]['final_gini']:.3f}", f"{m[name]['mean_gini_2nd_half']:.3f}",
           f"{m[name]['final_train_acc']:.3f}",
           f"{m[name]['diagonal_share']:.3f}" if "diagonal_share" in m[name] else ""]
          for name in RUNS]
  return (mc.titled_table("Gini coefficient of the loss-sensitivity ḡ_x", REFERENCE["source"],
                          ("run", "final Gini", "mean Gini (2nd half)", "train acc",
                           "ḡ_ij diagonal share"), rows)
          + f"\nGini real > random: {m['gini_real_above_random']} (thesis: yes for both); "
            f"real more off-diagonal: {m['real_spreads_more_off_diagonal']} (thesis: yes)")


def plot(out: str) -> list[str]:
  """Fig. 3.3 (Gini through training) and Fig. 3.4 (log ḡ_ij), from the saved files."""
  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.3), sharey=True)
  for i, name in enumerate(results["runs"]):
    ax = axes[0 if name.endswith("normal") else 1]
    ax.plot(arrays["eval_steps"], arrays["gini"][i], label=name.split("/")[0])
  for ax, title in zip(axes, ("normal labels", "unique-class labels")):
    ax.set_title(f"Fig. 3.3: Gini of ḡ_x, {title}")
    ax.set_xlabel("step")
    ax.legend()
  paths = [_plots.savefig(fig, out, "sensitivity_gini.png")]
  fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
  for ax, matrix, title in zip(axes, arrays["class_matrix"], ("real", "random")):
    image = ax.imshow(np.log10(matrix + 1e-12), cmap="viridis")
    ax.set_title(f"Fig. 3.4: log10 ḡ_ij, {title} data")
    ax.set_xlabel("class j of x")
    ax.set_ylabel("loss term i")
    fig.colorbar(image, ax=ax)
  paths.append(_plots.savefig(fig, out, "sensitivity_classes.png"))
  return paths
