"""Neural autoregressive flows (chapter 9 of the thesis) as a library.

* `MADE`: the masked autoregressive conditioner (flax linen).
* Transformers (`Transformer` interface): `affine_transformer` (eq. 9.5),
  `iaf_gate_transformer` (eq. 9.6), `dsf_transformer` (eq. 9.8), `ddsf_transformer`
  (eqs. 9.9-9.10, optional conditional weight normalization), registry `TRANSFORMERS`.
* Bijectors (distrax): `AutoregressiveBijector` (MAF or IAF direction, jit-able bisection
  inverse), `Permute`.
* `autoregressive_flow(...) -> Flow(init, bijector, distribution)`: stacks.
"""
from jaxthesis.flows.bijectors import DIRECTIONS, AutoregressiveBijector, Permute
from jaxthesis.flows.bisection import bisect_increasing, expand_bracket
from jaxthesis.flows.made import MADE, ORDERINGS, made_masks, make_ordering
from jaxthesis.flows.stacks import Flow, autoregressive_flow, standard_normal
from jaxthesis.flows.transformers import (
    SQUEEZE_DELTA,
    TRANSFORMERS,
    Transformer,
    affine_transformer,
    ddsf_transformer,
    dsf_transformer,
    iaf_gate_transformer,
    make_transformer,
)

__all__ = [
    "AutoregressiveBijector", "DIRECTIONS", "Flow", "MADE", "ORDERINGS", "Permute",
    "SQUEEZE_DELTA", "TRANSFORMERS", "Transformer", "affine_transformer",
    "autoregressive_flow", "bisect_increasing", "ddsf_transformer", "dsf_transformer",
    "expand_bracket", "iaf_gate_transformer", "made_masks", "make_ordering",
    "make_transformer", "standard_normal",
]
