"""Networks shared by the thesis's studies.

  mlp            `MLP`, the flax ReLU MLP of the Colored-MNIST experiments; `squared_norm`.
  masked_mlp     an MLP padded to a fixed width whose true width is an array, so width
                 sweeps vmap (the random search of appendix 11.1.9.1, capacity studies).
  width_buckets  rounding widths up to a geometric grid of padded widths.
"""
from jaxthesis.nn.masked_mlp import masked_mlp_apply, masked_mlp_init
from jaxthesis.nn.mlp import MLP, squared_norm
from jaxthesis.nn.width_buckets import bucket_width, group_by_bucket
