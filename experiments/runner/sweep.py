"""Sweeps: the `--sweep.*` flags and the members they ask for (the product of value lists and seeds)."""

import itertools

import ml_collections

from experiments.runner import run as run_lib
from experiments.runner.errors import RunError


def sweep_config() -> ml_collections.ConfigDict:
  """The `--sweep.*` flags: comma-separated values per field; members are the product of the lists."""
  s = ml_collections.ConfigDict()
  s.beta = ""      # e.g. "1,2,4,8"
  s.alpha = ""
  s.gamma = ""     # sparse prior only
  s.seeds = 1      # seeds config.seed, config.seed + 1, ...
  return s


def members(config: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict) -> dict:
  """`{name: member config}` for the requested sweep (e.g. "beta=2,seed=1"), or {} when none is requested."""
  values = {}
  for field, path in run_lib.SWEEPABLE.items():
    text = str(getattr(sweep, field)).strip()
    if text:
      try:
        values[path] = [float(v) for v in text.split(",")]
      except ValueError:
        raise RunError(f"--sweep.{field} must be comma-separated numbers, e.g. 1,2,4; got {text!r}") from None
      if len(set(values[path])) != len(values[path]):
        raise RunError(f"--sweep.{field} repeats a value: {text!r}")
  if "prior.gamma" in values and config.prior.name != "sparse":
    raise RunError("--sweep.gamma needs --prior=sparse")
  if sweep.seeds < 1:
    raise RunError(f"--sweep.seeds must be >= 1, got {sweep.seeds}")
  if sweep.seeds > 1:
    values["seed"] = [config.seed + i for i in range(sweep.seeds)]
  if not values:
    return {}
  out = {}
  for combo in itertools.product(*values.values()):
    member = ml_collections.ConfigDict(config.to_dict())
    member.update_from_flattened_dict(dict(zip(values, combo)))
    out[",".join(f"{path.split('.')[-1]}={v:g}" for path, v in zip(values, combo))] = member
  return out
