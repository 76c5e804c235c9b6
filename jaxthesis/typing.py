"""One home for the type aliases used across jaxthesis (as optax/_src/base.py does)."""
from typing import Any, Mapping, Union

import jax
import numpy as np

PRNGKey = jax.Array
Array = jax.Array
ArrayLike = Union[jax.Array, np.ndarray, float, int]
PyTree = Any
Params = PyTree
Metrics = Mapping[str, jax.Array]
