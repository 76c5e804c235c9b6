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

from jaxthesis.experiments import _cli, _config, _images, _results
from jaxthesis.experiments._images import load_images

KINDS = ("real", "randX", "randY")  # clean data, random inputs, random labels
_CORRUPTION = {"real": "none", "randX": "inputs", "randY": "labels"}
MODELS = ("mlp", "cnn")
DATASETS = _images.DATASETS
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


_CIFAR10_HOWTO = _images.CIFAR10_HOWTO


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
