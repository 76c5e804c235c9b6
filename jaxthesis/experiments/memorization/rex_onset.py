"""`jaxthesis memorization rex-onset`: when memorization starts on fixed-noise Colored MNIST.

Beyond the thesis. Colored MNIST under the paper's `fixed` noise protocol (label noise and
colours drawn once per restart, the task `jaxthesis rex cmnist --noise fixed` trains),
with the per-example recorder `jaxthesis.memorization.with_example_stats` wrapped around
the REx training task. Appendix 11.1.10 (Fig. 11.9) argues that the penalties stop working
once the network starts to memorize its training examples, because colour and shape are
only 85 % / 75 % correlated with the label: a training accuracy above 85 % needs
memorization. This study measures, per method, when memorization starts and when test
accuracy peaks.

Which examples only memorization can fit: the *unexplained* ones, whose (noisy) training
label disagrees with both the digit's shape (`digit < 5`, i.e. the label was flipped) and
its colour (about 0.25 × 0.15 of the training set). A colour-based or a shape-based
predictor gets every one of them wrong; fitting them is fitting noise. The broader set of
label-flipped examples (shape disagrees; colour agrees for most of them) is reported too.

An example is *fit* when the network classifies it as its training label. A binary
classifier at initialization fits half the examples by chance, so "first fit" would put
the onset at step 0; the onset here uses the step from which an example stayed fit until
the end of training (`ExampleStats.last_learned` of the examples fit at the end):
`memorization_onset` = the step by which `onset_fraction` of a restart's unexplained
examples were fit for good (`onset_step`). `test_peak` = the evaluation step of the
highest test accuracy once the network has learned predictive features (training accuracy
>= `learned_train_acc`): at initialization it scores chance, about 50 %, on the test domain,
more than any colour-using network, and that is not the peak the question is about. Both
are per restart; the table gives the median over restarts.

The statistics are measured every `record_every` steps, before the update, inside the
compiled run (one `lax.cond` on the step); restarts are vmapped as in `rex cmnist`.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.memorization import _common as mc
from jaxthesis.experiments.rex import cmnist

REFERENCE = {
    "source": "beyond the thesis; relates to Fig. 11.9 / the fixed-noise CMNIST discussion",
    "expected": "Appendix 11.1.10: penalties should act after predictive features are learned "
                "but before the model starts to memorize, since memorization makes the "
                "training risks small and equal and the penalties lose their signal. Expected "
                "here: test accuracy peaks around or before the step at which the examples "
                "that neither shape nor colour explains start being fit, and falls after it",
}
METHODS = ("erm", "irm", "vrex", "mmrex", "ri", "groupdro")  # not the grayscale oracle
GROUPS = ("unexplained", "flipped")


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis memorization rex-onset` run."""
  data: str = "auto"
  data_dir: Optional[str] = None
  methods: tuple = ("erm", "vrex")
  restarts: int = 3
  seed: int = 0
  num_train: Optional[int] = None   # digits of the training pool used (None: all)
  num_test: Optional[int] = None    # test digits used (None: all)
  step_fraction: float = 1.0        # each method's steps and anneal step, scaled (as rex cmnist)
  eval_every: int = 10              # steps between test-accuracy evaluations
  record_every: int = 5             # steps between per-example measurements
  onset_fraction: float = 0.5       # fraction of unexplained examples fit for good at the onset
  learned_train_acc: float = 0.7    # the test peak is looked for from this training accuracy on
  chunk_size: int = 50

  def __post_init__(self):
    mc.check_data_fields(self)
    _config.names(self, "methods", METHODS)
    for field in ("restarts", "eval_every", "record_every", "chunk_size"):
      _config.integer(self, field, 1)
    for field in ("num_train", "num_test"):
      if getattr(self, field) is not None:
        _config.integer(self, field, 10)
    _config.number(self, "step_fraction", 0.0, 1.0, strict=True)
    _config.number(self, "onset_fraction", 0.0, 1.0, strict=True)
    _config.fraction(self, "learned_train_acc")


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The paper's steps on all digits, ERM and V-REx, 3 restarts; `quick`: 1,000 + 500
  digits, a tenth of the steps, 2 restarts."""
  base = (Config(restarts=2, num_train=1000, num_test=500, step_fraction=0.1, eval_every=5,
                 record_every=2, chunk_size=10) if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  _cli.add_data_args(p)
  p.add_argument("--methods", type=_cli.name_list("--methods", METHODS), default=None,
                 help=f"comma-separated, from {','.join(METHODS)} (default erm,vrex)")
  p.add_argument("--restarts", type=_cli.positive_int("--restarts"), default=None)
  p.add_argument("--eval-every", dest="eval_every", type=_cli.positive_int("--eval-every"),
                 default=None)
  p.add_argument("--record-every", dest="record_every", default=None,
                 type=_cli.positive_int("--record-every"),
                 help="steps between per-example measurements (default 5)")
  p.add_argument("--onset-fraction", dest="onset_fraction", default=None,
                 type=_cli.fraction("--onset-fraction"),
                 help="fraction of unexplained examples fit for good at the onset (default 0.5)")


def example_groups(data_key, data):
  """`{group: bool[m·n]}` of one restart's fixed training draw (see the module docstring)."""
  import jax.numpy as jnp
  from jaxthesis.rex import colored_mnist
  x, y, mask = colored_mnist.sample_train_domains(data_key, data)
  noisy = y > 0.5
  flipped = noisy != (data.train_digits < 5)
  colour = jnp.sum(x[..., colored_mnist.NUM_PIXELS:], axis=-1) > 0  # digit in channel 1
  used = mask > 0
  return {"unexplained": (flipped & (colour != noisy) & used).reshape(-1),
          "flipped": (flipped & used).reshape(-1)}


def build_task(method: str, config: Config, data):
  """The `rex cmnist --noise fixed` task of `method`, recording per-example statistics.

  Returns `(task, method hparams, num_examples)`. The evaluation adds `<group>_fit`, the
  fraction of each group of `example_groups` the network fits.
  """
  import jax.numpy as jnp
  from jaxthesis import engine
  from jaxthesis.memorization import example_stats
  from jaxthesis.rex import colored_mnist, objectives, train

  hp = cmnist.method_hparams(method, config.step_fraction)
  model = train.mlp_model(hp.hidden, 2 * colored_mnist.NUM_PIXELS)
  inner = train.make_domain_task(
      hp.objective, model=model, num_domains=int(data.train_digits.shape[0]),
      sample_train=colored_mnist.sample_train_domains,
      sample_eval=colored_mnist.sample_eval_sets, population=False)

  def per_example(state, hparams, data):
    x, y, _ = colored_mnist.sample_train_domains(state.data_key, data)
    logits = model.apply(state.params, x, hparams)
    loss = objectives.binary_cross_entropy(logits, y)
    return loss.reshape(-1), ((logits > 0) == (y > 0.5)).reshape(-1)

  def evaluate(state, hparams, data):
    out = inner.evaluate(state, hparams, data)
    _, correct = per_example(state, hparams, data)
    for name, group in example_groups(state.data_key, data).items():
      out[f"{name}_fit"] = jnp.sum(correct & group) / jnp.maximum(jnp.sum(group), 1)
    return out

  num_examples = int(np.prod(data.train_digits.shape))
  task = example_stats.with_example_stats(engine.Task(inner.init, inner.step, evaluate),
                                          per_example, num_examples,
                                          every=config.record_every)
  return task, hp, num_examples


def test_peak_index(test_acc: np.ndarray, train_acc: np.ndarray, learned: float) -> np.ndarray:
  """Per restart, the evaluation index of the best test accuracy from the first evaluation
  with training accuracy >= `learned` on (from the start where it never gets there)."""
  reached = train_acc >= learned
  start = np.where(reached.any(axis=1), np.argmax(reached, axis=1), 0)
  masked = np.where(np.arange(test_acc.shape[1]) >= start[:, None], test_acc, -np.inf)
  return np.argmax(masked, axis=1)


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains every method (restarts vmapped) with the recorder; returns the results."""
  import jax
  from jaxthesis import engine
  from jaxthesis.memorization import example_stats
  from jaxthesis.rex import train

  clock = _results.Stopwatch()
  source, data = cmnist.load_domains(config.data, config.data_dir, config.seed,
                                     config.num_train, config.num_test)
  description = (f"Colored MNIST, fixed noise, on {source} data: {int(data.train_mask.sum())} "
                 f"training examples in {data.train_mask.shape[0]} domains, "
                 f"{data.test_digits.shape[0]} test")
  print(description, file=sys.stderr)
  groups_of = jax.jit(jax.vmap(example_groups, in_axes=(0, None)))
  metrics, arrays = {}, {}
  for method in config.methods:
    task, hp, _ = build_task(method, config, data)
    hparams = train.domain_hparams(
        config.restarts, learning_rate=hp.learning_rate, l2_weight=hp.l2_weight,
        penalty_weight=hp.penalty_weight, penalty_anneal_iters=hp.penalty_anneal_iters,
        groupdro_eta=hp.groupdro_eta)
    # The keys of `rex cmnist` for this method: the same restarts as its fixed-noise run.
    method_key = jax.random.fold_in(jax.random.PRNGKey(config.seed),
                                    1 + cmnist.ALL_METHODS.index(method))
    runner = engine.Runner(task, hp.steps, eval_every=min(config.eval_every, hp.steps),
                           chunk_size=min(config.chunk_size, hp.steps), progress=progress,
                           description=cmnist.METHOD_NAMES[method])
    out = runner.run(jax.random.split(method_key, config.restarts), hparams, data,
                     **mc.checkpoint_args(checkpoint_dir, method, config))
    stats = out.state.stats
    groups = {k: np.asarray(v) for k, v in groups_of(out.state.inner.data_key, data).items()}
    # The step from which an example stayed fit to the end; -1: not fit at the end.
    fit_for_good = np.where(np.asarray(stats.correct), np.asarray(stats.last_learned), -1)
    ev, eval_steps = out.history.evals, out.history.eval_steps
    peak_index = test_peak_index(ev["test_acc"], ev["train_acc"], config.learned_train_acc)
    entry = {"steps": hp.steps, "penalty_anneal_step": hp.penalty_anneal_iters,
             "test_peak_step": eval_steps[peak_index].astype(int).tolist(),
             "test_peak_acc": ev["test_acc"][np.arange(config.restarts), peak_index].tolist(),
             "final_test_acc": ev["test_acc"][:, -1].tolist(),
             "final_train_acc": ev["train_acc"][:, -1].tolist(),
             "group_sizes": {g: groups[g].sum(axis=1).astype(int).tolist() for g in GROUPS}}
    for g in GROUPS:
      entry[f"{g}_onset_step"] = [
          example_stats.onset_step(fit_for_good[r], groups[g][r], config.onset_fraction)
          if groups[g][r].any() else float("inf") for r in range(config.restarts)]
      entry[f"final_{g}_fit"] = ev[f"{g}_fit"][:, -1].tolist()
    onset = np.asarray(entry["unexplained_onset_step"])
    peak = np.asarray(entry["test_peak_step"], float)
    entry["memorization_onset_median"] = float(np.median(onset))
    entry["test_peak_median"] = float(np.median(peak))
    entry["onset_reached"] = int(np.isfinite(onset).sum())
    entry["peak_not_after_onset"] = int(np.sum(peak <= onset))
    metrics[method] = entry
    arrays.update({f"{method}/eval_steps": eval_steps, f"{method}/test_acc": ev["test_acc"],
                   f"{method}/train_acc": ev["train_acc"],
                   **{f"{method}/{g}_fit": ev[f"{g}_fit"] for g in GROUPS},
                   f"{method}/fit_for_good": fit_for_good,
                   f"{method}/first_learned": np.asarray(stats.first_learned),
                   f"{method}/forgetting": np.asarray(stats.forgetting),
                   **{f"{method}/{g}": groups[g] for g in GROUPS}})
  return {"experiment": "memorization/rex-onset", "data": source, "noise": "fixed",
          "description": description, "config": dataclasses.asdict(config), "metrics": metrics,
          "reference": REFERENCE, "devices": _results.devices(), "wall_seconds": clock(),
          "arrays": arrays}


save = _results.save


def _step(value: float) -> str:
  return "not reached" if value is None or not np.isfinite(value) else f"{value:.0f}"


def table(results: dict[str, Any]) -> str:
  rows = []
  for method, m in results["metrics"].items():
    r = len(m["test_peak_step"])
    rows.append([cmnist.METHOD_NAMES[method], _step(m["test_peak_median"]),
                 f"{100 * np.mean(m['test_peak_acc']):.1f}",
                 f"{100 * np.mean(m['final_test_acc']):.1f}",
                 f"{100 * np.mean(m['final_train_acc']):.1f}",
                 _step(m["memorization_onset_median"]), f"{m['onset_reached']}/{r}",
                 f"{100 * np.mean(m['final_unexplained_fit']):.1f}",
                 _step(float(np.median([np.inf if v is None else v
                                        for v in m["flipped_onset_step"]]))),
                 f"{m['peak_not_after_onset']}/{r}"])
  fraction = results["config"]["onset_fraction"]
  head = (f"Memorization onset vs test-accuracy peak, Colored MNIST ({results['data']} data, "
          f"fixed noise); steps are medians over restarts; thesis = {REFERENCE['source']}")
  return head + "\n" + _results.format_table(
      ["method", "test peak step", "peak test %", "final test %", "final train %",
       f"onset ({fraction:.0%} unexplained fit)", "onset reached", "unexplained fit %",
       "flipped onset", "peak <= onset"], rows)


def plot(out: str) -> list[str]:
  """Test accuracy and the fraction of unexplained / flipped examples fit, onset and peak
  marked, one panel per method (restart means), from the saved files."""
  results, arrays = _results.load(out)
  metrics = results["metrics"]
  plt = _plots.pyplot()
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
  for ax, (method, m) in zip(axes[0], metrics.items()):
    steps = arrays[f"{method}/eval_steps"]
    ax.plot(steps, 100 * arrays[f"{method}/test_acc"].mean(0), label="test accuracy")
    ax.plot(steps, 100 * arrays[f"{method}/train_acc"].mean(0), label="train accuracy", lw=1)
    ax.plot(steps, 100 * arrays[f"{method}/unexplained_fit"].mean(0),
            label="unexplained examples fit")
    ax.plot(steps, 100 * arrays[f"{method}/flipped_fit"].mean(0), ":",
            label="label-flipped examples fit")
    ax.axvline(m["test_peak_median"], color="k", ls="--", lw=1,
               label="test peak (features learned)")
    onset = m["memorization_onset_median"]
    if onset is not None and np.isfinite(onset):
      ax.axvline(onset, color="r", ls="--", lw=1, label="memorization onset")
    ax.set_title(f"{cmnist.METHOD_NAMES[method]} ({results['data']} data, fixed noise)")
    ax.set_xlabel("step")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
  axes[0][-1].legend(fontsize=7)
  fig.suptitle(REFERENCE["source"], fontsize=9)
  return [_plots.savefig(fig, out, "rex_onset.png")]
