"""Neural autoregressive flows (chapter 9 of the thesis) as a library.

* `MADE`: the masked autoregressive conditioner (flax linen).
* Transformers (`Transformer` interface): `affine_transformer` (Eq. 9.5),
  `iaf_gate_transformer` (Eq. 9.6, gate floored at `min_gate`), `dsf_transformer`
  (Eq. 9.8), `ddsf_transformer` (Eqs. 9.9-9.10, optional conditional weight
  normalization), registry `TRANSFORMERS`. By default every one is a bijection of R with
  dy/dx bounded below (DSF / DDSF mixed with a learned linear tail); `surjective=False`
  gives the thesis's bounded DSF / DDSF exactly. `check_transformer_inputs` is the check
  every transformer function runs first.
* Bijectors (distrax): `AutoregressiveBijector` (MAF or IAF direction, jit-able bisection
  inverse, differentiable through it), `Permute`.
* Root finding: `solve_increasing` (bisection plus a bracketed flag), `bisect_increasing`,
  `expand_bracket`, `steps_to_resolution`.
* `autoregressive_flow(...) -> Flow(init, bijector, distribution)`: stacks.
"""
from jaxthesis.flows.bijectors import DIRECTIONS, AutoregressiveBijector, Permute
from jaxthesis.flows.bisection import (
    Solution,
    bisect_increasing,
    expand_bracket,
    solve_increasing,
    steps_to_resolution,
)
from jaxthesis.flows.made import MADE, ORDERINGS, made_masks, make_ordering
from jaxthesis.flows.stacks import Flow, autoregressive_flow, standard_normal
from jaxthesis.flows.transformers import (
    MIN_TAIL_SLOPE,
    SQUEEZE_DELTA,
    TAIL_SLOPE_INIT,
    TRANSFORMERS,
    Transformer,
    affine_transformer,
    check_transformer_inputs,
    ddsf_transformer,
    dsf_transformer,
    iaf_gate_transformer,
    make_transformer,
)

__all__ = [
    "AutoregressiveBijector", "DIRECTIONS", "Flow", "MADE", "MIN_TAIL_SLOPE", "ORDERINGS",
    "Permute", "SQUEEZE_DELTA", "Solution", "TAIL_SLOPE_INIT", "TRANSFORMERS", "Transformer",
    "affine_transformer", "autoregressive_flow", "bisect_increasing",
    "check_transformer_inputs", "ddsf_transformer", "dsf_transformer", "expand_bracket",
    "iaf_gate_transformer", "made_masks", "make_ordering", "make_transformer",
    "solve_increasing", "standard_normal", "steps_to_resolution",
]
