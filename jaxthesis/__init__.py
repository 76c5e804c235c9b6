"""jaxthesis: the methods of a thesis on generalization and Bayesian deep learning, in JAX.

Subpackages:
  rex           Risk Extrapolation: ERM, IRMv1, V-REx, MM-REx, RI, GroupDRO; Colored MNIST; SEMs.
  flows         Neural autoregressive flows: MADE, affine / DSF / DDSF transformers (distrax).
  bhn           Bayesian hypernetworks: weight-norm primary nets, flow hypernets, ELBO, uncertainty.
  memorization  randX / randY, LASS and the critical sample ratio, loss-sensitivity.
  vi            ELBO, importance-weighted bound, KL annealing, learning-rate schedules.
  nn            MLPs and the masked-width MLP; sweeps: stacked datasets and step limits.
  data          Datasets from TFDS or from data that installed packages ship.
  engine        The compiled training engine (restarts vmapped, steps scanned, sharded).
"""
from jaxthesis import bhn, data, engine, flows, memorization, nn, rex, sweeps, vi
from jaxthesis.engine import History, Runner, RunResult, Task

__version__ = "0.1.0"
