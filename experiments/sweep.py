"""Sweeps: S members differing in seed, β, α or γ, trained together (one vmapped program on GPU/TPU).

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


def member_mesh(num_members: int, max_devices: int = 0):
  """A 'members' mesh over as many devices (at most `max_devices`; 0: all) as split the members evenly."""
  devices = jax.devices()[:max_devices or None]
  return parallel.make_mesh(devices[:parallel.largest_divisor(num_members, len(devices))], parallel.MEMBER_AXIS)


def sweep_mesh(config: ml_collections.ConfigDict, num_members: int, *, vectorise: bool | None = None):
  """The mesh of a sweep, which also decides how its members run (`make_sweep_step_fn`).

  `vectorise=True`: a 'members' mesh (`member_mesh`), the members vmapped in one program, the choice on
  GPU/TPU. `False`: the run's own data-parallel mesh (`loop.make_mesh`), members run one after another,
  the choice on CPU. Default: by backend.
  """
  vectorise = not loop.on_cpu() if vectorise is None else vectorise
  return member_mesh(num_members, config.train.num_devices) if vectorise else loop.make_mesh(config)


def states_sharding(mesh):
  """Sharding of the stacked member states: split over a 'members' mesh, replicated over a data mesh."""
  if parallel.MEMBER_AXIS in mesh.axis_names:
    return parallel.member_sharded(mesh)
  return parallel.replicated(mesh)


def make_sweep_step_fn(run: loop.Run, data: tasks.TaskData, mesh, num_steps: int):
  """`(states[S], arrays, seeds[S], hparams{name: [S]}) -> (states, metrics[S, num_steps])`.

  Members are stacked along the leading axis of `states`, `seeds` and `hparams`. How they run follows
  `mesh` (see `sweep_mesh`):
  - a 'members' mesh: one jitted program (`jax.shard_map`), whole members per device so that devices
    never communicate, the members of a device `vmap`ped. This is the sweep for GPU/TPU, where one member
    at batch 64 leaves the chip idle. Steps are fused as in `loop.fused_calls`.
  - a data mesh: member after member, each `num_steps` calls of one compiled data-parallel member step
    (as `loop.make_step_fn`, with the seed and swept values as arguments). This is the sweep for XLA:CPU,
    which ran vmapped (grouped) convolutions ~4x slower, and all members traced into one program ~10%
    slower than single runs; member by member matches single runs (BUILD_NOTES.md, "Sweeps").
  """
  if parallel.MEMBER_AXIS in mesh.axis_names:
    return _vectorised_step_fn(run, data, mesh, num_steps)
  return _member_by_member_step_fn(run, data, mesh, num_steps)


def _vectorised_step_fn(run, data, mesh, num_steps):
  split = P(parallel.MEMBER_AXIS)
  by_member, rep = parallel.member_sharded(mesh), parallel.replicated(mesh)

  def compile_steps(k):
    steps = loop.member_steps(run, data, None, k)
    member = jax.vmap(lambda state, arrays, seed, hp: steps(state, arrays, seed, **hp), in_axes=(0, None, 0, 0))
    fn = jax.shard_map(member, mesh=mesh, in_specs=(split, P(), split, split), out_specs=(split, split))
    return jax.jit(fn, donate_argnums=0, in_shardings=(by_member, rep, by_member, by_member),
                   out_shardings=(by_member, rep))

  return loop.fused_calls(compile_steps, num_steps)


def _member_by_member_step_fn(run, data, mesh, num_steps):
  rep = parallel.replicated(mesh)
  steps = loop.fused_calls(lambda k: jax.jit(
      lambda state, arrays, seed, hp: loop.member_steps(run, data, mesh, k)(state, arrays, seed, **hp),
      donate_argnums=0, in_shardings=(rep,) * 4, out_shardings=(rep, rep)), num_steps)
  unstack = jax.jit(_unstack, out_shardings=rep)
  stack = jax.jit(_stack, out_shardings=rep)

  def sweep_steps(states, arrays, seeds, hparams):
    members = unstack((states, seeds, hparams))
    out = []
    for state, seed, hp in members:
      out.append(steps(state, arrays, seed, hp))
      # One member's program at a time: XLA:CPU deadlocked in the all-reduce rendezvous when the
      # data-parallel programs of two independent members were in flight together.
      jax.block_until_ready(out[-1])
    return stack(out)

  return sweep_steps


def _stack(trees):
  """`[tree] -> tree` of arrays stacked along a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree) -> list:
  """The inverse of `_stack`."""
  return [jax.tree.map(lambda x: x[i], tree) for i in range(jax.tree.leaves(tree)[0].shape[0])]


def train_sweep(config: ml_collections.ConfigDict, member_configs: dict, workdir: str, *,
                start_over: bool = False, vectorise: bool | None = None) -> dict:
  """Trains the members together (`sweep_mesh`), then evaluates each as an ordinary run; returns the summaries."""
  names = list(member_configs)
  mesh = sweep_mesh(config, len(names), vectorise=vectorise)
  # The workdir's config records the members, so that another sweep (or a single run) is refused there
  # rather than resuming this sweep's stacked checkpoint under other hyperparameters.
  record = ml_collections.ConfigDict(config.to_dict())
  record.sweep_members = names
  loop.prepare_workdir(workdir, record, start_over=start_over)
  data = tasks.load_data(config, mesh)
  runs = [loop.make_run(member_configs[n], data) for n in names]
  run = runs[0]
  swept = [path for path in _SWEEPABLE.values()
           if len({_get(m, path) for m in member_configs.values()}) > 1]
  hparams = {path.split(".")[-1]: jnp.asarray([_get(member_configs[n], path) for n in names], jnp.float32)
             for path in swept}
  seeds = jnp.asarray([member_configs[n].seed for n in names], jnp.uint32)

  mngr = checkpointing.manager(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.max_to_keep)
  states = jax.device_put(_stack([loop.init_state(r, data) for r in runs]), states_sharding(mesh))
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
      fns[k] = make_sweep_step_fn(run, data, mesh, k)
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
