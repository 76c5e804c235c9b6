"""`jaxthesis bhn adversarial`: FGSM attacks and their detection by uncertainty (Fig. 7.5).

Models trained on MNIST are attacked with the fast gradient sign method, the gradient
estimated from `attack_samples` posterior samples (1 in Fig. 7.5, 32 in Fig. 11.13),
for step sizes epsilon on a grid up to 0.5. Against epsilon: accuracy, the mean of each
uncertainty score, and two detection AUROCs per score: clean vs adversarial inputs, and
correct vs misclassified adversarial inputs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.bhn import _common

REFERENCE = {
    "source": "Fig. 7.5",
    "expected": "accuracy drops as epsilon grows while uncertainty rises; BALD and mean std "
                "rise strongly for BHNs but not for dropout; IAF-BHNs detect adversarial "
                "examples and errors better than RealNVP-BHNs and MC dropout",
}


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  data: str = "builtin"
  data_dir: Optional[str] = None
  methods: tuple = ("iaf:8", "realnvp:8", "mc-dropout")
  epsilons: tuple = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
  attack_samples: int = 1
  hidden: int = 800
  num_epochs: int = 50
  batch_size: int = 128
  learning_rate: float = 1e-3
  num_eval_samples: int = 100
  prior_precision: float = 1.0
  hypernet_hidden: int = 200
  train_size: int = 0
  test_size: int = 1000

  def __post_init__(self):
    _common.check_mnist_config(self, positive=(
        "attack_samples", "hidden", "num_epochs", "batch_size", "num_eval_samples",
        "hypernet_hidden"))
    _config.numbers(self, "epsilons", 0.0, 1.0)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Fig. 7.5; `quick`: one small BHN and MC dropout, 2 epochs, 3 step sizes."""
  base = Config(methods=("gaussian:0", "mc-dropout"), epsilons=(0.0, 0.1, 0.3), hidden=32,
                num_epochs=2, hypernet_hidden=16, num_eval_samples=8, train_size=512,
                test_size=100) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  _cli.add_data_args(p)
  _common.add_specs_argument(p)
  p.add_argument("--epsilons", dest="epsilons", default=None,
                 type=lambda s: tuple(float(x) for x in s.split(",") if x.strip()))
  p.add_argument("--attack-samples", dest="attack_samples", default=None,
                 type=_cli.positive_int("--attack-samples"),
                 help="posterior samples for the attack gradient (32: Fig. 11.13)")
  p.add_argument("--epochs", dest="num_epochs", default=None, type=_cli.positive_int("--epochs"))


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  from jaxthesis import bhn

  clock = _results.Stopwatch()
  x_tr, y_tr, x_te, y_te, description = _common.load_config_mnist(config)
  key = jax.random.PRNGKey(config.seed)
  eps = jnp.asarray(config.epsilons, jnp.float32)
  metrics, arrays = {}, {"epsilons": np.asarray(config.epsilons)}
  for i, spec in enumerate(config.methods):
    _common.log(f"[bhn adversarial] training {spec}", progress)
    method, params, _ = _common.train_from_config(
        spec, jax.random.fold_in(key, i), x_tr, y_tr, config, progress=progress,
        checkpoint_dir=_common.checkpoint_path(checkpoint_dir, spec))
    p0 = _common.restart(params, 0)
    attack = jax.jit(jax.vmap(lambda e, k: bhn.fgsm(method, p0, k, x_te, y_te, e,
                                                    num_samples=config.attack_samples)))
    x_adv = np.asarray(attack(eps, jax.random.split(jax.random.fold_in(key, 50 + i), eps.shape[0])))
    clean = _common.sample_probs(method, params, jax.random.fold_in(key, 70 + i), x_te,
                                 config.num_eval_samples)[0]
    clean_scores = {n: np.asarray(f(clean)) for n, f in bhn.SCORES.items()}
    per_eps = []
    for j in range(len(config.epsilons)):
      probs = _common.sample_probs(method, params, jax.random.fold_in(key, 90 + i), x_adv[j],
                                   config.num_eval_samples)[0]
      pred = np.asarray(bhn.predictive(probs)).argmax(-1)
      correct = pred == y_te
      entry = {"accuracy": float(correct.mean()), "mean_score": {}, "auroc_clean_vs_adv": {},
               "auroc_error_detection": {}}
      for name, fn in bhn.SCORES.items():
        s = np.asarray(fn(probs))
        entry["mean_score"][name] = float(s.mean())
        both = np.concatenate([clean_scores[name], s])
        is_adv = np.r_[np.zeros(len(s), bool), np.ones(len(s), bool)]
        entry["auroc_clean_vs_adv"][name] = (float(bhn.auroc(both, is_adv))
                                             if config.epsilons[j] > 0 else None)
        entry["auroc_error_detection"][name] = (float(bhn.auroc(s, ~correct))
                                                if 0 < correct.sum() < len(correct) else None)
      per_eps.append(entry)
    metrics[spec] = per_eps
    arrays[f"accuracy_{i}"] = np.array([e["accuracy"] for e in per_eps])
    for name in bhn.SCORES:
      arrays[f"score_{i}_{name}"] = np.array([e["mean_score"][name] for e in per_eps])
      arrays[f"detect_{i}_{name}"] = np.array(
          [np.nan if e["auroc_clean_vs_adv"][name] is None else e["auroc_clean_vs_adv"][name]
           for e in per_eps])
      arrays[f"error_{i}_{name}"] = np.array(
          [np.nan if e["auroc_error_detection"][name] is None else e["auroc_error_detection"][name]
           for e in per_eps])
  return _common.results(
      "adversarial", f"{description}; used {len(y_tr)} train / {len(y_te)} attacked test digits",
      config, metrics, clock, arrays, REFERENCE)


save = _results.save


def table(results: dict[str, Any]) -> str:
  config = results["config"]
  epsilons = config["epsilons"] if isinstance(config, dict) else config.epsilons
  rows = []
  fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"
  for spec, per in results["metrics"].items():
    for e, entry in zip(epsilons, per):
      rows.append([_common.spec_label(spec), f"{e:g}", f"{100 * entry['accuracy']:.1f}",
                   f"{entry['mean_score']['bald']:.4f}", f"{entry['mean_score']['mean_std']:.4f}",
                   fmt(entry["auroc_clean_vs_adv"]["variation_ratio"]),
                   fmt(entry["auroc_clean_vs_adv"]["bald"]),
                   fmt(entry["auroc_error_detection"]["variation_ratio"])])
  text = _results.format_table(["method", "eps", "acc %", "mean BALD", "mean std",
                                "adv ROC (VR)", "adv ROC (BALD)", "error ROC (VR)"], rows)
  return f"{text}\n{REFERENCE['source']} (thesis): {REFERENCE['expected']}"


def plot(out: str) -> list[str]:
  from jaxthesis import bhn

  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  specs = list(results["config"]["methods"])
  eps = arrays["epsilons"]
  names = list(bhn.SCORES)
  fig, axes = plt.subplots(3, 1 + len(names), figsize=(2.6 * (1 + len(names)), 7.2))
  for i, spec in enumerate(specs):
    label = _common.spec_label(spec)
    axes[0][0].plot(eps, 100 * arrays[f"accuracy_{i}"], "o-", label=label)
    for j, name in enumerate(names):
      axes[0][j + 1].plot(eps, arrays[f"score_{i}_{name}"], "o-", label=label)
      axes[1][j + 1].plot(eps, arrays[f"detect_{i}_{name}"], "o-", label=label)
      axes[2][j + 1].plot(eps, arrays[f"error_{i}_{name}"], "o-", label=label)
  axes[0][0].set_title("accuracy (%)")
  axes[0][0].legend()
  for j, name in enumerate(names):
    axes[0][j + 1].set_title(f"mean {name}")
    axes[1][j + 1].set_title(f"adversary ROC ({name})")
    axes[2][j + 1].set_title(f"error ROC ({name})")
  axes[1][0].axis("off")
  axes[2][0].axis("off")
  for ax in axes[-1]:
    ax.set_xlabel("FGSM step size")
  fig.suptitle(f"{REFERENCE['source']}: FGSM with {results['config']['attack_samples']} "
               "sample(s) for the gradient", fontsize=9)
  return [_plots.savefig(fig, out, "adversarial.png")]
