"""Sweeps in one program: S members differing in seed, β, α or γ, trained as one jitted step.

Each member is exactly the run `train_and_evaluate` would do with that member's config (same keys, same
batches, same updates; tested), so a sweep is a faster way to get S ordinary runs. Members live stacked
along a leading axis of the state; the sweep's own checkpoints hold the stacked state (for resumption)
and, at the end, each member is written out as an ordinary run under `workdir/members/<name>/`, with its
config, checkpoint, metrics and summary, so every tool that reads a run reads a member.
"""

import itertools
import os

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import ml_collections
from absl import logging

from decompvae import parallel
from experiments import checkpointing
from experiments import evaluation
from experiments import loop
from experiments import tasks
from experiments import writer as writer_lib

# Swept field -> config path. Every other field is shared by all members.
_SWEEPABLE = {"beta": "objective.beta", "alpha": "objective.alpha", "gamma": "prior.gamma"}


def sweep_config() -> ml_collections.ConfigDict:
  """The `--sweep.*` flags: comma-separated values per field; members are the product of the lists."""
  s = ml_collections.ConfigDict()
  s.beta = ""      # e.g. "1,2,4,8"
  s.alpha = ""
  s.gamma = ""     # sparse prior only
  s.seeds = 1      # seeds config.seed, config.seed + 1, ...
  return s


def members(config: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict) -> dict:
  """`{name: member config}` for the requested sweep, or {} when no sweep is requested."""
  values = {}
  for field, path in _SWEEPABLE.items():
    text = str(getattr(sweep, field)).strip()
    if text:
      try:
        values[path] = [float(v) for v in text.split(",")]
      except ValueError as e:
        raise loop.RunError(f"--sweep.{field} must be comma-separated numbers, got {text!r}") from e
  if "prior.gamma" in values and config.prior.name != "sparse":
    raise loop.RunError("--sweep.gamma needs --prior=sparse")
  if sweep.seeds < 1:
    raise loop.RunError(f"--sweep.seeds must be >= 1, got {sweep.seeds}")
  if sweep.seeds > 1:
    values["seed"] = [config.seed + i for i in range(sweep.seeds)]
  if not values:
    return {}
  out = {}
  for combo in itertools.product(*values.values()):
    member = ml_collections.ConfigDict(config.to_dict())
    member.update_from_flattened_dict(dict(zip(values, combo)))
    name = ",".join(f"{path.split('.')[-1]}={v:g}" for path, v in zip(values, combo))
    out[name] = member
  return out


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member_mesh(num_members: int, max_devices: int = 0):
  """A mesh over as many devices (at most `max_devices`; 0: all) as split the members evenly.

  Each device trains its share of the members (`make_sweep_step_fn`).
  """
  devices = jax.devices()[:max_devices or None]
  return parallel.make_mesh(devices[:parallel.largest_divisor(num_members, len(devices))], parallel.MEMBER_AXIS)


def make_sweep_step_fn(run: loop.Run, data: tasks.TaskData, mesh, num_steps: int, *,
                       vectorise: bool | None = None):
  """`(states[S], arrays, seeds[S], hparams{name: [S]}) -> (states, metrics[S, num_steps])`, jitted.

  The members are split over `mesh` (see `member_mesh`), whole members per device, so that devices never
  communicate. On each device, `vectorise=True` vmaps its members (one batched program: the choice on
  GPU/TPU, where one small member leaves the chip idle); `False` traces them one after another, because
  XLA:CPU runs vmapped (grouped) convolutions ~4x slower than separate ones. Default: by backend.
  States stay split over the devices; metrics come back replicated. Steps are fused as `loop.fused_calls`.
  """
  vectorise = not loop.on_cpu() if vectorise is None else vectorise
  split = P(parallel.MEMBER_AXIS)
  by_member, rep = parallel.member_sharded(mesh), parallel.replicated(mesh)

  def compile_steps(k):
    steps = loop.member_steps(run, data, None, k)
    member = lambda state, arrays, seed, hp: steps(state, arrays, seed, **hp)

    def sequential(states, arrays, seeds, hparams):
      return _stack([member(jax.tree.map(lambda x: x[i], states), arrays, seeds[i],
                            jax.tree.map(lambda x: x[i], hparams)) for i in range(seeds.shape[0])])

    local = jax.vmap(member, in_axes=(0, None, 0, 0)) if vectorise else sequential
    fn = jax.shard_map(local, mesh=mesh, in_specs=(split, P(), split, split), out_specs=(split, split))
    return jax.jit(fn, donate_argnums=0, in_shardings=(by_member, rep, by_member, by_member),
                   out_shardings=(by_member, rep))

  return loop.fused_calls(compile_steps, num_steps)


def train_sweep(config: ml_collections.ConfigDict, member_configs: dict, workdir: str, *,
                start_over: bool = False, vectorise: bool | None = None) -> dict:
  """Trains every member as one program, then evaluates each as an ordinary run; returns the summaries."""
  names = list(member_configs)
  mesh = member_mesh(len(names), config.train.num_devices)
  loop.prepare_workdir(workdir, config, start_over=start_over)
  data = tasks.load_data(config, mesh)
  runs = [loop.make_run(member_configs[n], data) for n in names]
  run = runs[0]
  swept = [path for path in _SWEEPABLE.values()
           if len({_get(m, path) for m in member_configs.values()}) > 1]
  hparams = {path.split(".")[-1]: jnp.asarray([_get(member_configs[n], path) for n in names], jnp.float32)
             for path in swept}
  seeds = jnp.asarray([member_configs[n].seed for n in names], jnp.uint32)

  mngr = checkpointing.manager(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.max_to_keep)
  states = jax.device_put(_stack([loop.init_state(r, data) for r in runs]), parallel.member_sharded(mesh))
  step, restored = checkpointing.restore_latest(mngr, checkpointing.abstract(states))
  if step is not None:
    states = restored
  step = int(states.step[0])
  arrays = data.train
  writers = {n: writer_lib.MetricWriter(os.path.join(workdir, "members", n)) for n in names}
  n_call = max(1, config.train.steps_per_call)
  fns = {}
  logging.info("Sweep of %d members: %s", len(names), names)
  while step < run.num_steps:
    k = min(n_call, run.num_steps - step)
    if k not in fns:
      fns[k] = make_sweep_step_fn(run, data, mesh, k, vectorise=vectorise)
    states, metrics = fns[k](states, arrays, seeds, hparams)
    metrics = jax.device_get(metrics)
    for i, n in enumerate(names):
      last = {key: v[i, -1] for key, v in metrics.items()}
      writer_lib.check_finite(step + k, last)
      if (step + k) % config.train.log_every_steps == 0 or step + k == run.num_steps:
        writers[n].write(step + k, {f"train/{key}": v for key, v in last.items()})
    step += k
    if step % config.train.checkpoint_every_steps < k:
      checkpointing.save(mngr, step, states)
  checkpointing.save(mngr, step, states)
  mngr.close()

  states = jax.jit(lambda s: s, out_shardings=parallel.replicated(mesh))(states)   # gathered (across hosts too)
  summaries = {}
  for i, n in enumerate(names):
    member_dir = os.path.join(workdir, "members", n)
    loop.prepare_workdir(member_dir, member_configs[n], start_over=False)
    state = jax.tree.map(lambda x: x[i], states)
    member_mngr = checkpointing.manager(os.path.join(member_dir, "checkpoints"))
    checkpointing.save(member_mngr, step, state)
    member_mngr.close()
    summaries[n] = evaluation.evaluate_and_report(runs[i], state, data, member_dir)
  writer_lib.write_json(os.path.join(workdir, "sweep_summary.json"), summaries)
  return summaries


def _get(config: ml_collections.ConfigDict, path: str):
  for part in path.split("."):
    config = config[part]
  return config
