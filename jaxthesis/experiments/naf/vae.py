"""`jaxthesis naf vae`: amortized posteriors of a VAE on binarized MNIST (Table 9.I).

Three approximate posteriors `q(z | x)` for the same encoder/decoder (Section 9.6.3):

* "gaussian": the diagonal Gaussian `N(mu(x), sigma(x)^2)` of the plain VAE;
* "iaf_affine": that Gaussian pushed through IAF layers with the affine transformer
  (eq. 9.5), conditioned on an encoder context vector;
* "iaf_dsf": the same with the DSF transformer (eq. 9.8).

`log q(z | x) = log N(z0; mu, sigma^2) - log|det dz/dz0|` (eq. 9.1, IAF direction: one
parallel pass per sample). Trained on the single-sample ELBO
`E_q[log p(x | z) + log p(z) - log q(z | x)]` with a Bernoulli decoder; evaluated on the
test split by the ELBO (averaged over K posterior samples) and the importance-weighted
estimate `log p(x) ~ logsumexp_k(log p(x, z_k) - log q(z_k | x)) - log K` (Burda et al.).

Data: the built-in digits (4,000 train, 1,000 test; TFDS MNIST if prepared and asked for).
Training images are *dynamically* binarized (a fresh Bernoulli draw of the grey levels at
every step); the validation images (the last `num_valid` training digits, held out) and
the test images are binarized *once* with fixed keys. The parameters kept are those with
the best validation ELBO (checked every `eval_every` steps inside the compiled loop).

Expected (thesis): ELBO and log p(x) improve from Gaussian to IAF-affine to IAF-DSF; the
thesis reports -ELBO 85.00 / 82.25 / 81.92 and -log p(x) 81.66 / 80.05 / 79.86 nats on the
full binarized MNIST, which the built-in 4,000 digits cannot match in absolute terms.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, NamedTuple, Optional

import numpy as np

from jaxthesis.experiments import _common as common
from jaxthesis.experiments.naf import _common as nc

POSTERIORS = ("gaussian", "iaf_affine", "iaf_dsf")
# Table 9.I: (-ELBO, -log p(x)) in nats.
THESIS = {"gaussian": (85.00, 81.66), "iaf_affine": (82.25, 80.05), "iaf_dsf": (81.92, 79.86)}
NUM_PIXELS = 784


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  models: tuple[str, ...] = POSTERIORS
  latent_dim: int = 32
  hidden: int = 300
  context_dim: int = 64
  flow_layers: int = 2
  flow_hidden: int = 256
  dsf_units: int = 16
  num_steps: int = 10000
  batch_size: int = 100
  learning_rate: float = 1e-3
  num_seeds: int = 5
  num_valid: int = 500
  eval_every: int = 500
  num_test: Optional[int] = None
  num_importance: int = 1000
  eval_chunk: int = 10
  data_source: str = "builtin"
  data_dir: Optional[str] = None
  seed: int = 0


def get_config(quick: bool = False) -> VAEConfig:
  if quick:
    return VAEConfig(latent_dim=4, hidden=64, context_dim=16, flow_layers=1, flow_hidden=32,
                     dsf_units=4, num_steps=40, batch_size=50, num_seeds=1, num_valid=100,
                     eval_every=20, num_test=100, num_importance=16, eval_chunk=50)
  return VAEConfig()


# ------------------------------------------------------------------------------ model


class VAE(NamedTuple):
  """A VAE as pure functions over one params pytree.

  Attributes:
    init: `(key) -> params`.
    sample_posterior: `(params, x [B, 784], key, num_samples) -> (z [S, B, L], log_q [S, B])`.
    log_joint: `(params, x [B, 784], z [..., B, L]) -> log p(x, z) [..., B]`.
    posterior_transform: `(params, x [B, 784], eps [..., B, L]) -> (z, log q(z | x))`, the
      reparameterization `z = T(mu + sigma eps)` that `sample_posterior` applies to
      standard normal `eps`.
  """
  init: Any
  sample_posterior: Any
  log_joint: Any
  posterior_transform: Any


def make_vae(posterior: str, config: VAEConfig) -> VAE:
  """Encoder/decoder MLPs with the chosen posterior family (see the module docstring)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from jaxthesis import flows

  if posterior not in POSTERIORS:
    raise ValueError(f"posterior must be one of {', '.join(POSTERIORS)}, got {posterior!r}")
  latent, ctx_dim = config.latent_dim, config.context_dim

  class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.elu(nn.Dense(config.hidden)(x))
      h = nn.elu(nn.Dense(config.hidden)(h))
      out = nn.Dense(2 * latent + ctx_dim)(h)
      return out[..., :latent], out[..., latent:2 * latent], nn.elu(out[..., 2 * latent:])

  class Decoder(nn.Module):
    @nn.compact
    def __call__(self, z):
      h = nn.elu(nn.Dense(config.hidden)(z))
      h = nn.elu(nn.Dense(config.hidden)(h))
      return nn.Dense(NUM_PIXELS)(h)

  encoder, decoder = Encoder(), Decoder()
  flow = None
  if posterior != "gaussian":
    transformer = "affine" if posterior == "iaf_affine" else "dsf"
    kwargs = {} if transformer == "affine" else {"hidden_units": config.dsf_units}
    flow = flows.autoregressive_flow(
        latent, transformer, transformer_kwargs=kwargs, num_layers=config.flow_layers,
        hidden_sizes=(config.flow_hidden,), direction="iaf", context_size=ctx_dim,
        output_init_scale=0.1)

  def init(key):
    k_enc, k_dec, k_flow = jax.random.split(key, 3)
    params = {"encoder": encoder.init(k_enc, jnp.zeros((NUM_PIXELS,))),
              "decoder": decoder.init(k_dec, jnp.zeros((latent,)))}
    if flow is not None:
      params["flow"] = flow.init(k_flow)
    return params

  def posterior_transform(params, x, eps):
    mu, raw_scale, context = encoder.apply(params["encoder"], x)
    sigma = jax.nn.softplus(raw_scale) + 1e-4
    z = mu + sigma * eps
    log_q = (jax.scipy.stats.norm.logpdf(eps) - jnp.log(sigma)).sum(-1)
    if flow is not None:
      z, log_det = flow.bijector(params["flow"], context).forward_and_log_det(z)
      log_q = log_q - log_det
    return z, log_q

  def sample_posterior(params, x, key, num_samples):
    eps = jax.random.normal(key, (num_samples,) + x.shape[:-1] + (latent,))
    return posterior_transform(params, x, eps)

  def log_joint(params, x, z):
    logits = decoder.apply(params["decoder"], z)
    # Bernoulli log-likelihood, -BCE in optax's stable form.
    log_lik = -optax.sigmoid_binary_cross_entropy(logits, x).sum(-1)
    return log_lik + jax.scipy.stats.norm.logpdf(z).sum(-1)

  return VAE(init, sample_posterior, log_joint, posterior_transform)


def elbo_and_log_likelihood(vae: VAE, params, x, key, num_samples: int):
  """Per-image ELBO (mean over K samples) and importance-weighted log p(x) (K samples).

  `log p(x) >= logsumexp_k(log w_k) - log K >= mean_k log w_k`, `w_k = p(x, z_k) / q(z_k|x)`.
  """
  import jax
  z, log_q = vae.sample_posterior(params, x, key, num_samples)
  log_w = vae.log_joint(params, x, z) - log_q
  return log_w.mean(0), jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)


# ------------------------------------------------------------------------------- data


def binarized_digits(config: VAEConfig):
  """(train grey levels in [0, 1] [N, 784], valid binary, test binary), float32."""
  import jax
  from jaxthesis.data import load_mnist

  train = load_mnist("train", config.data_source, config.data_dir).images
  test = load_mnist("test", config.data_source, config.data_dir).images
  if config.num_valid >= train.shape[0]:
    raise ValueError(f"num_valid must be below the {train.shape[0]} training images, "
                     f"got {config.num_valid}")
  grey = train.reshape(train.shape[0], -1).astype(np.float32) / 255.0
  test = test.reshape(test.shape[0], -1).astype(np.float32)[:config.num_test] / 255.0
  valid = grey[-config.num_valid:]
  key_valid, key_test = jax.random.split(jax.random.PRNGKey(20180401))  # fixed binarization
  binary = lambda k, p: np.asarray(jax.random.bernoulli(k, p), np.float32)
  return grey[:-config.num_valid], binary(key_valid, valid), binary(key_test, test)


# ------------------------------------------------------------------------- training


class VAEState(NamedTuple):
  params: Any
  opt_state: Any
  best_params: Any      # the parameters with the best validation ELBO so far
  best_valid: Any       # [] that ELBO


def vae_task(vae: VAE, config: VAEConfig):
  """An engine `Task`: Adam on the dynamically binarized single-sample ELBO, keeping the
  parameters with the best validation ELBO (evaluated every `eval_every` steps)."""
  import jax
  import jax.numpy as jnp
  import optax

  from jaxthesis import engine

  optimizer = optax.adam(config.learning_rate)

  def neg_elbo(params, key, images):
    z, log_q = vae.sample_posterior(params, images, key, 1)
    return -(vae.log_joint(params, images, z) - log_q).mean()

  def valid_elbo(params, valid):
    return -neg_elbo(params, jax.random.PRNGKey(1), valid)

  def init(key, hparams, data):
    del hparams
    params = vae.init(key)
    return VAEState(params, optimizer.init(params), params, valid_elbo(params, data["valid"]))

  def step(state, step, key, hparams, data):
    del hparams
    k_rows, k_bin, k_z = jax.random.split(key, 3)
    rows = jax.random.randint(k_rows, (config.batch_size,), 0, data["train"].shape[0])
    images = jax.random.bernoulli(k_bin, data["train"][rows]).astype(jnp.float32)
    loss, grads = jax.value_and_grad(neg_elbo)(state.params, k_z, images)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    due = (step + 1) % config.eval_every == 0
    value = jax.lax.cond(due, lambda p: valid_elbo(p, data["valid"]),
                         lambda p: jnp.float32(-jnp.inf), params)
    better = value > state.best_valid
    best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), params,
                                  state.best_params)
    state = VAEState(params, opt_state, best, jnp.maximum(value, state.best_valid))
    return state, {"loss": loss}, {"valid_elbo": jnp.where(due, value, jnp.nan)}

  return engine.Task(init, step)


def run(config: VAEConfig, out_dir: str, progress: bool = True) -> dict:
  import jax
  import jax.numpy as jnp

  from jaxthesis import engine

  for model in config.models:
    if model not in POSTERIORS:
      raise ValueError(f"config.models: unknown {model!r}; choose from {', '.join(POSTERIORS)}")
  train, valid, test = binarized_digits(config)
  data = {"train": jnp.asarray(train), "valid": jnp.asarray(valid)}
  test = jnp.asarray(test)
  chunk = min(config.eval_chunk, test.shape[0])
  num_chunks = test.shape[0] // chunk
  test = test[:num_chunks * chunk].reshape(num_chunks, chunk, NUM_PIXELS)
  metrics = {"binarization": "train: dynamic; valid/test: one fixed Bernoulli draw",
             "num_train": int(train.shape[0]), "num_test": int(num_chunks * chunk)}
  curves = {}
  for model in config.models:
    vae = make_vae(model, config)
    runner = engine.Runner(vae_task(vae, config), config.num_steps, progress=progress,
                              description=f"vae {model}")
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
    result = runner.run(keys, None, data)

    @jax.jit
    def evaluate(params, key, vae=vae):
      def one_chunk(args):
        images, k = args
        return elbo_and_log_likelihood(vae, params, images, k, config.num_importance)
      elbo, log_px = jax.lax.map(one_chunk, (test, jax.random.split(key, num_chunks)))
      return elbo.mean(), log_px.mean()

    eval_keys = jax.random.split(jax.random.PRNGKey(config.seed + 17), config.num_seeds)
    elbo, log_px = jax.vmap(evaluate)(result.state.best_params, eval_keys)
    elbo, log_px = np.asarray(elbo), np.asarray(log_px)
    metrics[model] = {"neg_elbo": common.mean_std(-elbo)[0],
                      "neg_elbo_std": common.mean_std(-elbo)[1],
                      "neg_log_px": common.mean_std(-log_px)[0],
                      "neg_log_px_std": common.mean_std(-log_px)[1],
                      "neg_elbo_per_seed": -elbo, "neg_log_px_per_seed": -log_px,
                      "best_valid_elbo": np.asarray(result.state.best_valid),
                      "final_train_neg_elbo": float(np.nanmean(
                          result.history.losses["loss"][:, -100:]))}
    valid_curve = result.history.metrics["valid_elbo"]
    curves[model] = (np.flatnonzero(np.isfinite(valid_curve[0])) + 1,
                     np.nanmean(valid_curve[:, np.isfinite(valid_curve[0])], 0))
  ordered = [m for m in POSTERIORS if m in config.models]
  metrics["ordering_holds"] = bool(all(
      metrics[a]["neg_log_px"] >= metrics[b]["neg_log_px"] and
      metrics[a]["neg_elbo"] >= metrics[b]["neg_elbo"] for a, b in zip(ordered, ordered[1:])))

  plt = nc.matplotlib()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  x = np.arange(len(ordered))
  axes[0].bar(x - 0.2, [metrics[m]["neg_elbo"] for m in ordered], 0.4, label="-ELBO")
  axes[0].bar(x + 0.2, [metrics[m]["neg_log_px"] for m in ordered], 0.4, label="-log p(x)")
  axes[0].set_xticks(x, ordered)
  axes[0].set_ylabel("nats (test)")
  axes[0].set_ylim(bottom=0.95 * min(metrics[m]["neg_log_px"] for m in ordered))
  axes[0].legend(fontsize=8)
  for model, (steps, values) in curves.items():
    axes[1].plot(steps, -values, marker=".", label=model)
  axes[1].set_xlabel("step")
  axes[1].set_ylabel("validation -ELBO (nats)")
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  fig.savefig(os.path.join(out_dir, "vae_posteriors.png"), dpi=110)
  plt.close(fig)
  return metrics


TABLE_HEADERS = ("posterior", "-ELBO (test)", "-log p(x) (IW)", "thesis -ELBO",
                 "thesis -log p(x)")


def table_rows(metrics: dict, config: VAEConfig) -> list[list[str]]:
  rows = []
  for model in [m for m in POSTERIORS if m in config.models]:
    m = metrics[model]
    rows.append([model, common.pm(m["neg_elbo"], m["neg_elbo_std"], 2),
                 common.pm(m["neg_log_px"], m["neg_log_px_std"], 2),
                 f"{THESIS[model][0]:.2f}", f"{THESIS[model][1]:.2f}"])
  return rows


def data_label(config: VAEConfig) -> str:
  """The results.json `data` entry."""
  source = {"builtin": "built-in digits (4,000 train / 1,000 test)", "tfds": "TFDS MNIST",
            "auto": "MNIST (TFDS if prepared, else built-in digits)"}[config.data_source]
  return f"{source}; train dynamically binarized, valid/test binarized once"
