"""Compiled training steps: one run's data-parallel step, and a sweep's members vmapped in one program.

Every step function here has the loop's shape `(state, train_arrays) -> (state, metrics)`, with each metric
shaped [S, k]: S members (1 for a run) by the k steps of one call.
"""

import collections
import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from decompvae import parallel
from decompvae import train
from experiments.runner import devices
from experiments.runner import run as run_lib
from experiments.runner import task as task_lib


def member_steps(run: run_lib.Run, data: task_lib.TaskData, mesh, num_steps: int):
  """Un-jitted `(state, arrays, seed, hparams) -> (state, metrics[num_steps])`: `num_steps` fused steps.

  Batches are split over `mesh`'s 'data' axis; `mesh=None` leaves their placement to the caller (a
  sweep trains whole members per device). `hparams` overrides β, α or γ of the config with traced values
  (a sweep's); a run passes {} so its values stay Python constants and α = 0 skips the divergence.
  """
  c = run.config
  shard = (functools.partial(jax.lax.with_sharding_constraint, shardings=parallel.batch_sharded(mesh))
           if mesh is not None else lambda x: x)

  def steps(state, arrays, seed, hparams):
    step = functools.partial(run.train_step, **{"beta": c.objective.beta, "alpha": c.objective.alpha, **hparams})
    batch_fn = lambda s: shard(data.batch_fn(arrays, seed, s))
    return train.make_fused_steps(step, batch_fn, num_steps)(state, train.seed_keys(seed)[1])

  return steps


# Step programs that may be in flight on XLA:CPU (dispatched, not finished): two keep the devices busy, the
# rest absorbs host hiccups. XLA:CPU deadlocks when a device reaches its limit of 32 (see `fused_calls`).
CPU_MAX_STEPS_IN_FLIGHT = 4
_cpu_steps_in_flight = collections.deque()   # metrics of the latest step programs, oldest first


def fused_calls(compile_steps, num_steps: int):
  """`compile_steps(num_steps)` on GPU/TPU; on CPU, a function making `num_steps` calls of `compile_steps(1)`.

  XLA:CPU runs convolution gradients 5–30x slower inside a loop body (a rolled `lax.scan`), and a trace-time
  unrolled loop compiled for long and ran slower than the one-step program, so on CPU the one-step program
  is dispatched `num_steps` times and its metrics, shape [..., 1], are concatenated on the device into
  [..., num_steps], fetched once (BUILD_NOTES.md, "Fused loop").

  On CPU at most `CPU_MAX_STEPS_IN_FLIGHT` step programs of the process are in flight: before each dispatch
  the host waits for the one dispatched that many steps earlier. XLA:CPU (jaxlib 0.10) admits 32 programs
  per device; the next dispatch blocks one of its client threads until one finishes, and with one device per
  core only as many threads as devices run the programs, so a data-parallel step then waits in its
  all-reduce for a partner that no thread is left to run, and XLA aborts the process after 40 s
  (BUILD_NOTES.md, "Collective aborts on CPU").
  """
  if not devices.on_cpu():
    return compile_steps(num_steps)
  one = compile_steps(1)

  def calls(state, *args):
    history = []
    for _ in range(num_steps):
      while len(_cpu_steps_in_flight) >= CPU_MAX_STEPS_IN_FLIGHT:
        jax.block_until_ready(_cpu_steps_in_flight.popleft())
      state, metrics = one(state, *args)
      _cpu_steps_in_flight.append(metrics)
      history.append(metrics)
    if num_steps == 1:
      return state, history[0]
    return state, jax.tree.map(lambda *m: jnp.concatenate(m, axis=-1), *history)

  return calls


def run_steps(run: run_lib.Run, data: task_lib.TaskData, mesh, num_steps: int):
  """`(state, arrays) -> (state, metrics[1, num_steps])` of one run, data-parallel over `mesh`, donating the state."""
  rep = parallel.replicated(mesh)

  def compile_steps(k):
    steps = member_steps(run, data, mesh, k)

    def fn(state, arrays):
      state, metrics = steps(state, arrays, run.config.seed, {})
      return state, jax.tree.map(lambda m: m[None], metrics)

    return jax.jit(fn, donate_argnums=0, in_shardings=(rep, rep), out_shardings=(rep, rep))

  return fused_calls(compile_steps, num_steps)


def sweep_steps(run: run_lib.Run, data: task_lib.TaskData, mesh, num_steps: int, seeds, hparams):
  """`(states[S], arrays) -> (states, metrics[S, num_steps])`: S members in one program on a 'members' mesh.

  `jax.shard_map` gives each device whole members (devices never communicate), and the members of a
  device are `vmap`ped; `seeds` [S] and `hparams` {name: [S]} are the members' own values. This is the
  sweep for GPU/TPU, where one member at batch 64 leaves the chip idle.
  """
  split = P(parallel.MEMBER_AXIS)
  by_member, rep = parallel.member_sharded(mesh), parallel.replicated(mesh)
  seeds, hparams = jax.device_put((seeds, hparams), by_member)

  def compile_steps(k):
    steps = jax.vmap(member_steps(run, data, None, k), in_axes=(0, None, 0, 0))
    fn = jax.shard_map(steps, mesh=mesh, in_specs=(split, P(), split, split), out_specs=(split, split))
    fn = jax.jit(fn, donate_argnums=0, in_shardings=(by_member, rep, by_member, by_member),
                 out_shardings=(by_member, by_member))
    return lambda states, arrays: fn(states, arrays, seeds, hparams)

  return fused_calls(compile_steps, num_steps)
