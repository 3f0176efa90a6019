"""A PyTorch baseline for the speed comparison, run side by side with `benchmarks.train_speed` (same machine,
same load, same allocator). Optional: needs `torch` in the interpreter that runs it (e.g. a separate venv with
a CPU wheel); it is not part of the package or its tests.

  python benchmarks/torch_reference.py --steps=30
  python benchmarks/torch_reference.py --only=dsprites --steps=100

The dSprites network is docs/science.md §4's, written here from that description with PyTorch's default layers and
initialisation (as the authors use): conv encoder, transposed-conv decoder, Bernoulli likelihood, the β-VAE
loss with N(0, I), Adam with AMSGrad, batch 64. The MMD case times value and gradient of the dimension-wise
IMQ MMD written the direct way (B×B×D differences per scale), B = 500, D = 50. Prints one JSON object.
Where torch is installed, tests/test_networks.py checks that `DSprites` computes our dSprites networks.
"""

import argparse
import json
import os
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F

IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class DSprites(nn.Module):
  def __init__(self, d=10):
    super().__init__()
    self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
                             nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(1024, 128))
    self.heads = nn.Linear(128, 2 * d)
    self.dec = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, 1024), nn.ReLU(),
                             nn.Unflatten(1, (64, 4, 4)), nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
                             nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1),
                             nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

  def forward(self, x):
    loc, logvar = self.heads(self.enc(x)).chunk(2, -1)
    scale = torch.exp(0.5 * logvar) + 1e-6
    z = loc + scale * torch.randn_like(loc)
    logits = self.dec(z)
    lpx_z = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
    return loc, scale, z, lpx_z


def mmd_dim_direct(zq, zp):
  """Σ_d Σ_s unbiased IMQ MMD between the d-th columns: the straightforward B×B×D form."""
  b = zq.shape[0]
  off = 1.0 - torch.eye(b)[:, :, None]

  def k(a, c):
    sq = (a[:, None, :] - c[None, :, :]) ** 2
    return sum((2 * s) / (2 * s + sq) for s in IMQ_SCALES)

  return (((k(zp, zp) + k(zq, zq)) * off).sum() / (b * (b - 1)) - 2 * k(zp, zq).sum() / b**2)


def dsprites_step():
  torch.manual_seed(0)
  model = DSprites()
  x = (torch.rand(64, 1, 64, 64) < 0.1).float()
  opt = torch.optim.Adam(model.parameters(), lr=5e-4, amsgrad=True)

  def step():
    loc, scale, _, lpx_z = model(x)
    kl = (0.5 * (scale**2 + loc**2 - 1) - torch.log(scale)).sum(-1)
    loss = -(lpx_z - kl).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()

  return step


def mmd_step():
  torch.manual_seed(0)
  zq, zp = torch.randn(500, 50, requires_grad=True), torch.randn(500, 50)

  def step():
    zq.grad = None
    mmd_dim_direct(zq, zp).backward()

  return step


def _median_seconds(fn, steps, repeats):
  for _ in range(3):
    fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(steps):
      fn()
    times.append((time.perf_counter() - t) / steps)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--only", choices=("dsprites", "mmd"), help="run one case (default both; mmd takes minutes)")
  args = parser.parse_args()
  out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
         "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc (default)",
         "load_average_1min": os.getloadavg()[0]}
  if args.only in (None, "dsprites"):
    sec = _median_seconds(dsprites_step(), args.steps, args.repeats)
    out["dsprites"] = {"batch_size": 64, "ms_per_step": 1e3 * sec, "images_per_s": 64 / sec}
  if args.only in (None, "mmd"):
    mmd = _median_seconds(mmd_step(), max(1, args.steps // 4), args.repeats)
    out["mmd_direct"] = {"batch_size": 500, "latent_dim": 50, "ms_value_and_grad": 1e3 * mmd}
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
