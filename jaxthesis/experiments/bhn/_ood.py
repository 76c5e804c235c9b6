"""Out-of-distribution image sets for the MNIST anomaly studies, all available offline.

Every set is float32 [N, 784] in [0, 1] (28 x 28 grayscale, flattened):

* "uniform": i.i.d. U[0, 1] pixels;
* "gaussian": i.i.d. N(0.5, 1) pixels clipped to [0, 1] (Hendrycks and Gimpel's noise);
* "photo-patches": random 28 x 28 patches of the grayscale photographs that scikit-image
  ships in its wheel, each photograph resized to a short side of 112 pixels first (a
  stand-in for Table 7.II's CIFAR-bw);
* "faces": scikit-image's 200 `lfw_subset` faces (25 x 25) resized to 28 x 28;
* "digits8x8": scikit-learn's 1,797 8 x 8 digits upsampled to 28 x 28 (near-OOD).

notMNIST and Omniglot of Table 7.II are not available offline and are not used.
"""
from __future__ import annotations

import numpy as np

from jaxthesis.experiments import _config

OOD_SETS = ("uniform", "gaussian", "photo-patches", "faces", "digits8x8")
PHOTOGRAPHS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon", "clock",
               "grass", "gravel", "brick", "hubble_deep_field")
NEEDS_SKIMAGE = ("photo-patches", "faces")


def check_available(names) -> None:
  """Raises UsageError naming a set whose package is not installed (before any training)."""
  if any(n in NEEDS_SKIMAGE for n in names):
    try:
      import skimage  # noqa: F401
    except ImportError:
      raise _config.UsageError(
          f"config.ood_sets: {', '.join(n for n in names if n in NEEDS_SKIMAGE)} need "
          "scikit-image (pip install scikit-image)", "ood_sets") from None


def _resize(images: np.ndarray, shape) -> np.ndarray:
  from skimage.transform import resize
  return np.stack([resize(im, shape, anti_aliasing=True) for im in images])


def load(name: str, num: int, seed: int) -> np.ndarray:
  """`num` images of the set `name` (sets smaller than `num` are repeated)."""
  rng = np.random.default_rng(seed)
  if name == "uniform":
    out = rng.uniform(size=(num, 784))
  elif name == "gaussian":
    out = np.clip(rng.normal(0.5, 1.0, size=(num, 784)), 0.0, 1.0)
  elif name == "photo-patches":
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import rescale
    photos = []
    for p in PHOTOGRAPHS:
      im = np.asarray(getattr(skimage.data, p)(), np.float64)
      if im.ndim == 3:
        im = rgb2gray(im[..., :3] / (255.0 if im.max() > 1 else 1.0))
      elif im.max() > 1:
        im = im / 255.0
      photos.append(rescale(im, 112 / min(im.shape), anti_aliasing=True))
    which = rng.integers(0, len(photos), num)
    out = np.empty((num, 28, 28))
    for i, w in enumerate(which):
      im = photos[w]
      r, c = rng.integers(0, im.shape[0] - 27), rng.integers(0, im.shape[1] - 27)
      out[i] = im[r:r + 28, c:c + 28]
    out = out.reshape(num, 784)
  elif name == "faces":
    import skimage.data
    faces = _resize(np.asarray(skimage.data.lfw_subset(), np.float64), (28, 28))
    out = faces[rng.permutation(np.arange(num) % len(faces))].reshape(num, 784)
  elif name == "digits8x8":
    from sklearn.datasets import load_digits
    digits = load_digits().images / 16.0
    picked = digits[rng.permutation(len(digits))[np.arange(num) % len(digits)]]
    out = _resize(picked, (28, 28)).reshape(num, 784)
  else:
    raise ValueError(f"name must be one of {', '.join(OOD_SETS)}, got {name!r}")
  return np.clip(out, 0.0, 1.0).astype(np.float32)
