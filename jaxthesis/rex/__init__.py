"""Risk Extrapolation (thesis chapter 5): objectives, Colored MNIST, domain training."""
from jaxthesis.rex import colored_mnist, covariate_shift, search, selection, sem, sweeps, toy
from jaxthesis.rex.objectives import (
    GroupDROState,
    binary_cross_entropy,
    domain_risks,
    erm,
    groupdro_init,
    groupdro_update,
    irmv1_penalty,
    irmv1_penalty_unbiased,
    minimax_penalty,
    mmrex,
    mmrex_penalty_weight,
    penalized_loss,
    penalty_weight_at,
    risk_interpolation,
    variance_penalty,
    vrex,
)
from jaxthesis.rex.train import (
    METHODS,
    DomainHParams,
    DomainState,
    domain_hparams,
    make_domain_task,
)
