"""jaxthesis: the methods of a thesis on generalization and Bayesian deep learning, in JAX.

Subpackages:
  rex      Risk Extrapolation: ERM, IRMv1, V-REx, MM-REx, RI, GroupDRO; Colored MNIST.
  flows    Neural autoregressive flows: MADE, affine / DSF / DDSF transformers (distrax).
  data     Datasets from TFDS or from data that installed packages ship.
  engine   The compiled training engine (vmap over restarts, scan over steps).
"""
from jaxthesis import data, engine, flows, nn, rex, sweeps
from jaxthesis.engine import History, Runner, RunResult, Task

__version__ = "0.1.0"
