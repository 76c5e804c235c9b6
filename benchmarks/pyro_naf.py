"""The Pyro baseline of benchmarks/naf_speed.py: a DSF flow trained with PyTorch eager.

Pyro's `NeuralAutoregressive` transform with its default sigmoid activation is the deep
sigmoidal flow (Eq. 9.8 of the thesis), conditioned by Pyro's `AutoRegressiveNN` (a MADE).
One training step is the MAF-direction negative log-likelihood
`-mean(log N(T(x)) + log|det dT/dx|)`, its gradient and an Adam update.
"""
from __future__ import annotations

import time

import numpy as np

import _bench


def make_step(num_dims: int, hidden: int, hidden_units: int = 16, learning_rate: float = 1e-3,
              seed: int = 0, device: str = "cpu"):
  """Returns `step(x: torch.Tensor [B, D]) -> float loss` for a fresh Pyro DSF flow."""
  import torch
  from pyro.distributions.transforms import NeuralAutoregressive
  from pyro.nn import AutoRegressiveNN

  torch.manual_seed(seed)
  made = AutoRegressiveNN(num_dims, [hidden, hidden], param_dims=[hidden_units] * 3)
  transform = NeuralAutoregressive(made, hidden_units=hidden_units).to(device)
  optimizer = torch.optim.Adam(transform.parameters(), lr=learning_rate)
  log_two_pi = float(np.log(2 * np.pi))

  def step(x):
    optimizer.zero_grad()
    # The transform caches its last (x, y) pair by identity; a new tensor per step keeps a
    # repeated batch from reusing the previous step's freed graph.
    x = x.clone()
    z = transform(x)
    log_det = transform.log_abs_det_jacobian(x, z)
    if log_det.dim() == 2:  # per-dimension terms
      log_det = log_det.sum(-1)
    log_base = -0.5 * (z ** 2 + log_two_pi).sum(-1)
    loss = -(log_base + log_det).mean()
    loss.backward()
    optimizer.step()
    return loss.detach()

  return step


def time_step(num_dims: int, hidden: int, batch: np.ndarray, repeats: int,
              warmup: int = 3, device: str = "cpu", seconds: float = 0.0) -> dict:
  """Median seconds per training step on a fixed batch (numpy [B, D]), over at least
  `repeats` steps and about `seconds` (at most 3,000 steps)."""
  import torch
  x = torch.as_tensor(batch).to(device)
  step = make_step(num_dims, hidden, device=device)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  def call():
    step(x)
    sync()

  for _ in range(warmup):
    call()
  repeats = _bench.repeats_for(call, repeats, seconds)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return {"seconds_per_step": float(np.median(times)), "repeats": repeats,
          "threads": torch.get_num_threads()}


def toy_training(num_steps: int, batch_size: int, hidden: int, seed: int = 0,
                 device: str = "cpu") -> dict:
  """A 2-D fit of a 2 x 2 Gaussian grid, `num_steps` steps, fresh batch each step."""
  import torch
  step = make_step(2, hidden, seed=seed, device=device)
  generator = torch.Generator(device=device).manual_seed(seed)
  centers = torch.tensor([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]], device=device)
  start = time.perf_counter()
  losses = []
  for _ in range(num_steps):
    idx = torch.randint(0, 4, (batch_size,), generator=generator, device=device)
    x = centers[idx] + 0.5 * torch.randn(batch_size, 2, generator=generator, device=device)
    losses.append(step(x))
  final = float(torch.stack(losses[-50:]).mean())
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "steps_per_second": num_steps / seconds, "final_loss": final}
