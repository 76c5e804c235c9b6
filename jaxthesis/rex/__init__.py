"""Risk Extrapolation (thesis chapter 5): objectives, Colored MNIST, domain training.

Objectives are `Objective` init/update pairs in the registry `OBJECTIVES` (erm, irm,
vrex, mmrex, ri, groupdro); `make_domain_task` builds one engine `Task` from any of them,
and the random search (`search.make_search_task`) is that same task with a masked-width
model.

Integer arrays, one rule for every objective here (`objectives`, `toy`, `sem`): arrays
of values that a gradient is taken through — logits, risks, model parameters, regression
inputs and targets — must be floating point; an integer or bool one is rejected with a
TypeError naming the argument, before tracing (a cast would hide a caller's mistake, and
`jax.grad` cannot differentiate integers). Class labels, 0/1 masks and domain sizes are
counts, not values: they may be integer or bool and are cast to the floating dtype of
the logits or risks they go with. Scalar hyperparameters (β, λ_min, step sizes) may be
Python ints.

Callables (`loss_fn`, samplers, `input_transform`, model functions) are checked where
they are received, with a TypeError naming the argument.
"""
from jaxthesis.rex import colored_mnist, covariate_shift, search, selection, sem, toy
from jaxthesis.rex.objectives import (
    GROUPDRO,
    IRM_ESTIMATORS,
    OBJECTIVES,
    GroupDROState,
    Objective,
    ObjectiveInputs,
    ObjectiveTerms,
    binary_cross_entropy,
    domain_risks,
    erm,
    groupdro_init,
    groupdro_update,
    irm_objective,
    irmv1_penalty,
    irmv1_penalty_unbiased,
    make_objective,
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
    DomainModel,
    DomainState,
    domain_hparams,
    make_domain_task,
    mlp_model,
)
