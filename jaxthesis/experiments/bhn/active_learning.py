"""`jaxthesis bhn active-learning`: active learning on MNIST (Section 7.4.3, Fig. 7.4).

Gal et al.'s protocol as the thesis replicates it: start from 20 labelled digits (2 per
class), acquire 10 pool points at a time by an acquisition function (BALD, variation
ratio, max entropy, mean std or random; `jaxthesis.bhn.ACQUISITIONS`), retrain for a
fixed number of epochs between acquisitions, warm-started from the previous round's
parameters (the thesis's choice) or re-initialized (Gal et al.'s), 3 repeats; test
accuracy against the number of acquired examples.

Every acquisition function and repeat of one method is a vmap axis: the labelled set is
a padded index array `[L]` whose first `count` entries are labelled, so one round --
training (`bhn.subset_trainer`), test accuracy and acquisition over the whole pool -- is
ONE compiled program whose shapes do not change from round to round. Repeat r shares its
initial labelled set, initial parameters and training noise across acquisition
functions; the acquisition noise depends on the function's name, so a function's curve
does not depend on which others run beside it.

Differences from the thesis: the primary net is the MLP of the other chapter-7 studies
(weight-normalized, `hidden` units x 2), not Gal et al.'s CNN, and the pool is the
training split of the built-in 4,000 / 1,000 MNIST (TFDS MNIST when prepared); Adam's
state and the KL annealing restart every round, with a 10-step learning-rate warm-up; the
KL term is divided by the pool size, not the labelled count (`Config.kl_num_train`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.bhn import _common

ACQUISITION_NAMES = ("bald", "variation_ratio", "entropy", "mean_std", "random")
REFERENCE = {
    "source": "Fig. 7.4",
    "expected": "warm-started BHNs suffer at the beginning but outperform the other methods "
                "after moderate to large numbers of acquisitions, with random and with BALD "
                "acquisition; warm starts improve stability but hurt the non-BHN methods "
                "compared with re-initializing; the no-dropout baseline is competitive with "
                "MC dropout and beats dropout; curves are the average of 3 runs (no numbers "
                "are given in the text)",
    "protocol": {"initial_per_class": 2, "acquire_size": 10, "num_epochs": 50,
                 "num_repeats": 3, "warm_start": True},
    "claims": {
        "bhn": "best after enough acquisitions (warm start); worse at the start",
        "mle": "competitive with MC dropout; better than dropout",
        "mc-dropout": "about the no-dropout baseline",
        "dropout": "below the no-dropout baseline",
        "bbb": "not in Fig. 7.4",
    },
}


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  data: str = "builtin"
  data_dir: Optional[str] = None
  methods: tuple = ("realnvp:8", "mc-dropout", "dropout", "mle")
  acquisitions: tuple = ACQUISITION_NAMES
  warm_start: bool = True
  initial_per_class: int = 2
  acquire_size: int = 10
  num_acquisitions: int = 100
  num_repeats: int = 3
  hidden: int = 800
  num_epochs: int = 50
  batch_size: int = 128
  learning_rate: float = 1e-3
  num_samples: int = 1
  num_eval_samples: int = 20
  prior_precision: float = 1.0
  hypernet_hidden: int = 200
  chunk_size: int = 500  # pool / test examples scored at once (bounds memory)
  train_size: int = 0    # the pool: the first train_size training examples (0: all)
  test_size: int = 0     # 0: every test example
  # N of the ELBO's KL term, (log q - log p) / N. 0: the pool size (the default). The
  # thesis is silent for active learning; N = the labelled count (the ELBO of the labelled
  # set alone) lets the KL of the 1,610 scales against N(0, 1) outweigh the likelihood of
  # 20-30 digits by two orders of magnitude, the hypernet then matches the prior and the
  # predictions are at chance, so by default the KL is weighted as for the full pool
  # (a tempered posterior, as a fixed L2 penalty would be).
  kl_num_train: int = 0
  warmup_steps: int = 10  # Adam's linear learning-rate warm-up in every round (0: none)

  def __post_init__(self):
    _common.check_mnist_config(self, positive=(
        "initial_per_class", "acquire_size", "num_acquisitions", "num_repeats", "hidden",
        "num_epochs", "batch_size", "num_samples", "num_eval_samples", "hypernet_hidden",
        "chunk_size"))
    _config.names(self, "acquisitions", ACQUISITION_NAMES)
    for name in ("kl_num_train", "warmup_steps"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        _config.fail(name, "a non-negative int", value)
    if not isinstance(self.warm_start, bool):
      _config.fail("warm_start", "True or False", self.warm_start)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Fig. 7.4 (100 acquisitions of 10, 50 epochs); `quick`: a tiny BHN, 3 acquisitions."""
  base = Config(methods=("gaussian:0",), acquisitions=("bald", "variation_ratio", "random"),
                num_acquisitions=3, num_repeats=2, hidden=32, num_epochs=3, batch_size=32,
                hypernet_hidden=16, num_eval_samples=8, chunk_size=250, train_size=500,
                test_size=200) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  _cli.add_data_args(p)
  _common.add_specs_argument(p)
  p.add_argument("--acquisitions", dest="acquisitions", default=None,
                 type=_cli.name_list("--acquisitions", ACQUISITION_NAMES))
  p.add_argument("--reinit", dest="warm_start", action="store_const", const=False,
                 default=None, help="re-initialize after every acquisition (Gal et al.) "
                 "instead of warm-starting (the thesis)")
  p.add_argument("--rounds", dest="num_acquisitions", default=None,
                 type=_cli.positive_int("--rounds"), help="number of acquisitions")
  p.add_argument("--repeats", dest="num_repeats", default=None,
                 type=_cli.positive_int("--repeats"))
  p.add_argument("--epochs", dest="num_epochs", default=None, type=_cli.positive_int("--epochs"),
                 help="training epochs between acquisitions")
  p.add_argument("--kl-n", dest="kl_num_train", default=None,
                 type=_cli.nonnegative_int("--kl-n"),
                 help="N of the ELBO's KL term (0: the pool size, the default)")
  p.add_argument("--warmup-steps", dest="warmup_steps", default=None,
                 type=_cli.nonnegative_int("--warmup-steps"),
                 help="Adam learning-rate warm-up steps in every round (0: none)")
  p.add_argument("--train-size", dest="train_size", default=None,
                 type=_cli.nonnegative_int("--train-size"), help="pool size (0: all)")


def initial_sets(labels: np.ndarray, per_class: int, num_repeats: int, seed: int) -> np.ndarray:
  """`[num_repeats, num_classes * per_class]` pool indices: `per_class` random examples of
  each class (Gal et al.'s balanced start), drawn independently per repeat."""
  classes = np.unique(labels)
  sets = []
  for r in range(num_repeats):
    rng = np.random.default_rng([seed, r])
    sets.append(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class,
                                           replace=False) for c in classes]))
  return np.stack(sets).astype(np.int32)


def make_init(method, initial_size: int):
  """`init_fn(keys [R], round_index, labelled [R, L], x_pool) -> params` of every run,
  jitted: the data-dependent initialization on each run's first `initial_size` labelled
  examples, with the key of that run and round."""
  import jax

  def one(key, round_index, labelled, x_pool):
    init_key = jax.random.split(jax.random.fold_in(key, round_index), 4)[0]
    return method.init(init_key, x_pool[labelled[:initial_size]])

  return jax.jit(jax.vmap(one, in_axes=(0, None, 0, None)))


def make_round(method, config: Config):
  """One active-learning round for every run at once, jitted and vmapped over runs.

  `round_fn(state, fresh, reinit, keys, acquisition, round_index, count, data) ->
  (state, out)` where `state = (params, labelled [R, L], available [R, P])`, `fresh` the
  parameters to start from where `reinit` (unbatched bool) is set (`make_init`), `keys
  [R]` the runs' keys, `acquisition [R]` indices into `bhn.ACQUISITIONS`, `count` the
  labelled-set size of this round (unbatched) and `data = (x_pool, y_pool, x_test,
  y_test)`. The round trains, measures test accuracy and, unless it is the last round,
  writes the `acquire_size` best-scoring available pool points after the first `count`
  labelled ones. `out = {"accuracy" [R], "loss" [R], "acquired" [R, k], "bad_step" [R, 2]}`
  (the first training step whose NLL / KL term was non-finite, -1 where none).
  """
  import jax
  import jax.numpy as jnp
  from jaxthesis import bhn

  train = bhn.subset_trainer(method, batch_size=config.batch_size,
                             num_epochs=config.num_epochs, learning_rate=config.learning_rate,
                             warmup_steps=config.warmup_steps)
  k, num_rounds, samples = config.acquire_size, config.num_acquisitions + 1, config.num_eval_samples

  def chunked_probs(params, key, x):
    # The same key for every chunk: one set of posterior samples scores the whole set.
    n = x.shape[0]
    chunk = min(config.chunk_size, n)
    pad = -n % chunk
    xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, chunk, x.shape[1])
    probs = jax.lax.map(lambda xc: bhn.sample_probabilities(
        method.sample_outputs(params, key, xc, samples)), xs)  # [C, S, chunk, K]
    return jnp.moveaxis(probs, 1, 0).reshape(probs.shape[1], -1, probs.shape[-1])[:, :n]

  def one(state, fresh, reinit, key, acquisition, round_index, count, data):
    params, labelled, available = state
    x_pool, y_pool, x_test, y_test = data
    _, train_key, eval_key, acq_key = jax.random.split(jax.random.fold_in(key, round_index), 4)
    params = jax.tree_util.tree_map(lambda f, p: jnp.where(reinit, f, p), fresh, params)
    params, loss, bad = train(params, train_key, x_pool, y_pool, labelled, count,
                              num_train=float(config.kl_num_train or x_pool.shape[0]))
    pred = bhn.predictive(chunked_probs(params, eval_key, x_test)).argmax(-1)
    accuracy = jnp.mean(pred == y_test)

    def acquire(args):
      labelled, available = args
      probs = chunked_probs(params, jax.random.fold_in(acq_key, 0), x_pool)
      scores = bhn.scores_by_index(acquisition, probs, jax.random.fold_in(acq_key, 1))
      new = bhn.select_top(scores, available, k).astype(jnp.int32)
      return (jax.lax.dynamic_update_slice(labelled, new, (count,)),
              available.at[new].set(False), new)

    skip = lambda args: (args[0], args[1], jnp.full((k,), -1, jnp.int32))
    labelled, available, new = jax.lax.cond(round_index < num_rounds - 1, acquire, skip,
                                            (labelled, available))
    return (params, labelled, available), {"accuracy": accuracy, "loss": loss, "acquired": new,
                                             "bad_step": bad}

  return jax.jit(jax.vmap(one, in_axes=(0, 0, None, 0, 0, None, None, None)))


# What the compiled programs of a method depend on (not the acquisition functions or the
# number of repeats: those only set the run axis, a shape).
_PROGRAM_FIELDS = ("seed", "hidden", "hypernet_hidden", "prior_precision", "num_samples",
                   "batch_size", "num_epochs", "learning_rate", "acquire_size",
                   "num_acquisitions", "num_eval_samples", "chunk_size", "kl_num_train",
                  "warmup_steps")
_PROGRAMS: dict = {}


def _programs(spec: str, index: int, input_size: int, num_classes: int, initial_size: int,
              config: Config):
  """`(make_round(...), make_init(...))` of the method `spec`, kept for the process so a
  second `run` with the same settings (a notebook, the tests) does not compile again."""
  import jax

  key = (spec, index, input_size, num_classes, initial_size,
         tuple(getattr(config, f) for f in _PROGRAM_FIELDS))
  if key not in _PROGRAMS:
    method = _common.build_method(
        spec, input_size, (config.hidden,) * 2, num_classes,
        key=jax.random.fold_in(jax.random.PRNGKey(config.seed), 10_000 + index),
        prior_precision=config.prior_precision, num_samples=config.num_samples,
        hypernet_hidden=config.hypernet_hidden)
    if len(_PROGRAMS) >= 8:
      _PROGRAMS.pop(next(iter(_PROGRAMS)))
    _PROGRAMS[key] = (make_round(method, config), make_init(method, initial_size))
  return _PROGRAMS[key]


def _open_checkpoint(path: str, fingerprint: Any):
  """`(rounds done, saved arrays or None)`; refuses a checkpoint of another configuration
  before anything is compiled."""
  from jaxthesis import engine

  meta_path = os.path.join(path, "meta.json")
  if not os.path.exists(meta_path):
    os.makedirs(path, exist_ok=True)
    with open(meta_path, "w") as f:
      json.dump(fingerprint, f, default=str)
    return 0, None
  with open(meta_path) as f:
    if json.load(f) != json.loads(json.dumps(fingerprint, default=str)):
      raise engine.CheckpointMismatchError(
          f"checkpoint_dir {path!r} holds a run with another configuration; use a new "
          f"directory or delete it (on the command line: --fresh)")
  state_path = os.path.join(path, "state.npz")
  if not os.path.exists(state_path):
    return 0, None
  saved = dict(np.load(state_path))
  return int(saved["rounds_done"]), saved


def _restore(saved: dict, template, history: dict):
  """The state (structure and dtypes of `template`, e.g. from `jax.eval_shape`) and the
  history saved by `_save_checkpoint`."""
  import jax
  leaves, treedef = jax.tree_util.tree_flatten(template)
  state = jax.tree_util.tree_unflatten(
      treedef, [np.asarray(saved[f"s{i}"], l.dtype) for i, l in enumerate(leaves)])
  return state, {name: saved[f"h_{name}"] for name in history}


def _save_checkpoint(path: str, rounds_done: int, state, history) -> None:
  import jax
  payload = {f"s{i}": np.asarray(l) for i, l in enumerate(jax.tree_util.tree_leaves(state))}
  payload.update({f"h_{name}": v for name, v in history.items()})
  tmp = os.path.join(path, "state.tmp.npz")
  np.savez(tmp, rounds_done=rounds_done, **payload)
  os.replace(tmp, os.path.join(path, "state.npz"))


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  from jaxthesis import bhn

  clock = _results.Stopwatch()
  x_pool, y_pool, x_te, y_te, description = _common.load_config_mnist(config)
  num_classes = int(max(y_pool.max(), y_te.max())) + 1
  counts = np.bincount(y_pool, minlength=num_classes)
  if counts.min() < config.initial_per_class:
    raise _config.UsageError(
        f"config.initial_per_class must be <= the rarest class's pool count {counts.min()}, "
        f"got {config.initial_per_class}", "initial_per_class")
  initial_size = num_classes * config.initial_per_class
  k, num_acq = config.acquire_size, config.num_acquisitions
  num_labelled_max = initial_size + num_acq * k
  if num_labelled_max > len(y_pool):
    raise _config.UsageError(
        f"config.num_acquisitions: {initial_size} initial + {num_acq} x {k} acquired exceeds "
        f"the pool of {len(y_pool)}", "num_acquisitions")

  names, repeats = config.acquisitions, config.num_repeats
  num_runs = len(names) * repeats
  initial = initial_sets(y_pool, config.initial_per_class, repeats, config.seed)
  base = jax.random.PRNGKey(config.seed)
  # Run (a, r): repeat r's key for init and training, the function's own for acquisition.
  run_keys = jnp.stack([jax.random.fold_in(base, r) for _ in names for r in range(repeats)])
  acq_index = jnp.asarray([bhn.acquisition_index(n) for n in names for _ in range(repeats)],
                          jnp.int32)
  labelled0 = np.zeros((num_runs, num_labelled_max), np.int32)
  labelled0[:, :initial_size] = np.tile(initial, (len(names), 1))
  available0 = np.ones((num_runs, len(y_pool)), bool)
  for i, row in enumerate(labelled0):
    available0[i, row[:initial_size]] = False
  data = tuple(jnp.asarray(a) for a in (x_pool, y_pool, x_te, y_te))
  acquired_x = k * np.arange(num_acq + 1)

  metrics, arrays = {}, {"acquired": acquired_x}
  for i, spec in enumerate(config.methods):
    round_fn, init_fn = _programs(spec, i, x_pool.shape[1], num_classes, initial_size, config)
    init_args = (run_keys, jnp.int32(0), jnp.asarray(labelled0), data[0])
    history = {"accuracy": np.full((num_runs, num_acq + 1), np.nan, np.float32),
               "loss": np.full((num_runs, num_acq + 1), np.nan, np.float32)}
    ckpt = _common.checkpoint_path(checkpoint_dir, spec)
    start, saved = (0, None) if ckpt is None else _open_checkpoint(ckpt, dataclasses.asdict(config))
    if saved is not None:
      template = (jax.eval_shape(init_fn, *init_args), labelled0, available0)
      state, history = _restore(saved, template, history)
      _common.log(f"[bhn active-learning] {spec}: resuming, {start} of {num_acq + 1} rounds done",
                  progress)
    else:
      state = (init_fn(*init_args), jnp.asarray(labelled0), jnp.asarray(available0))
    for r in range(start, num_acq + 1):
      count = initial_size + r * k
      reinit = r > 0 and not config.warm_start  # round 0 starts from init_fn's parameters
      fresh = (init_fn(run_keys, jnp.int32(r), state[1], data[0]) if reinit else state[0])
      state, out = round_fn(state, fresh, jnp.asarray(reinit), run_keys, acq_index,
                            jnp.int32(r), jnp.int32(count), data)
      out = jax.device_get(out)
      history["accuracy"][:, r], history["loss"][:, r] = out["accuracy"], out["loss"]
      steps = out["bad_step"]
      if not np.all(np.isfinite(out["loss"])) or np.any(steps >= 0):
        bad = int(np.flatnonzero(~np.isfinite(out["loss"]) | np.any(steps >= 0, -1))[0])
        terms = ", ".join(f"{term} first non-finite at training step {int(st)}"
                          for term, st in zip(("NLL", "KL"), steps[bad]) if st >= 0)
        raise FloatingPointError(f"non-finite training loss in round {r} (method {spec}, "
                                 f"{names[bad // repeats]}, repeat {bad % repeats}): "
                                 f"{terms or 'the last epoch mean'}")
      if ckpt is not None:
        _save_checkpoint(ckpt, r + 1, state, history)
      acc = out["accuracy"].reshape(len(names), repeats)
      _common.log(f"[bhn active-learning] {spec} round {r}/{num_acq} ({count} labelled): "
                  + ", ".join(f"{n} {100 * a.mean():.1f}%" for n, a in zip(names, acc))
                  + f" [{clock():.0f} s]", progress)
    labelled = np.asarray(state[1])
    accuracy = history["accuracy"].reshape(len(names), repeats, num_acq + 1)
    metrics[spec] = {}
    for a, name in enumerate(names):
      curves = accuracy[a]
      auc = np.trapezoid(curves, acquired_x, axis=-1) / max(acquired_x[-1], 1) if num_acq else curves[:, 0]
      metrics[spec][name] = {
          "final_accuracy": _stats(curves[:, -1]), "area_under_curve": _stats(auc),
          "initial_accuracy": _stats(curves[:, 0]),
          "mean_curve": curves.mean(0).tolist()}
    arrays[f"accuracy_{i}"] = accuracy
    arrays[f"labelled_{i}"] = labelled.reshape(len(names), repeats, -1)
  data_text = (f"{description}; pool {len(y_pool)} training digits, {len(y_te)} test; "
               f"{initial_size} initial labelled ({config.initial_per_class} per class), "
               f"{num_acq} acquisitions of {k}; "
               f"{'warm-started' if config.warm_start else 're-initialized'} each round")
  return _common.results("active-learning", data_text, config, metrics, clock, arrays,
                         REFERENCE)


def _stats(values: np.ndarray) -> dict[str, float]:
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


save = _results.save


def _claim(spec: str) -> str:
  name, _ = _common.parse_spec(spec)
  return REFERENCE["claims"].get(name, REFERENCE["claims"]["bhn"])


def table(results: dict[str, Any]) -> str:
  config = results["config"]
  get = (lambda f: config[f]) if isinstance(config, dict) else (lambda f: getattr(config, f))
  rows = []
  for spec, per in results["metrics"].items():
    for name, m in per.items():
      rows.append([_common.spec_label(spec), name,
                   _results.pm(100 * m["initial_accuracy"]["mean"],
                               100 * m["initial_accuracy"]["std"]),
                   _results.pm(100 * m["final_accuracy"]["mean"], 100 * m["final_accuracy"]["std"]),
                   _results.pm(100 * m["area_under_curve"]["mean"],
                               100 * m["area_under_curve"]["std"]),
                   _claim(spec)])
  acquired = get("num_acquisitions") * get("acquire_size")
  text = _results.format_table(
      ["method", "acquisition", "acc % at start", f"acc % after {acquired}", "AUC %",
       f"{REFERENCE['source']} (thesis)"], rows)
  start = "warm-started" if get("warm_start") else "re-initialized"
  lines = [text, f"mean ± std over {get('num_repeats')} repeats, {start}; AUC = mean accuracy "
           "over the acquisition curve (trapezoid)"]
  if len(results["metrics"]) > 1:
    for name in get("acquisitions"):
      best = max(results["metrics"],
                 key=lambda s: results["metrics"][s][name]["final_accuracy"]["mean"])
      lines.append(f"best after {acquired} acquired by {name}: {_common.spec_label(best)}")
  lines.append(f"{REFERENCE['source']} (thesis): {REFERENCE['expected']}")
  return "\n".join(lines)


def plot(out: str) -> list[str]:
  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  config = results["config"]
  specs, names = list(config["methods"]), list(config["acquisitions"])
  x = arrays["acquired"]
  fig, axes = plt.subplots(1, len(specs), figsize=(4.2 * len(specs), 3.4), squeeze=False)
  for i, (ax, spec) in enumerate(zip(axes[0], specs)):
    acc = 100 * arrays[f"accuracy_{i}"]  # [A, R, rounds]
    for a, name in enumerate(names):
      mean, std = acc[a].mean(0), acc[a].std(0)
      ax.plot(x, mean, label=name)
      ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_title(_common.spec_label(spec))
    ax.set_xlabel("acquired examples")
    ax.set_ylabel("test accuracy (%)")
  axes[0][0].legend(fontsize=7)
  start = "warm start" if config["warm_start"] else "re-initialized"
  fig.suptitle(f"{REFERENCE['source']}: active learning ({start}, mean ± std over "
               f"{config['num_repeats']} repeats)", fontsize=9)
  return [_plots.savefig(fig, out, "active_learning.png")]
