"""The CPU step loop keeps few programs in flight: XLA:CPU aborted data-parallel runs past 32 per device.

With one XLA device per core, a dispatch beyond XLA:CPU's 32 programs per device blocked one of the threads
that run the devices, and the other device's half of an all-reduce then waited for 40 s and aborted the
process (BUILD_NOTES.md, "Collective aborts on CPU"; `benchmarks/stress_collectives.py` counts the aborts).
`steps.fused_calls` waits for the step dispatched `CPU_MAX_STEPS_IN_FLIGHT` steps earlier before each
dispatch. Here a fake program whose outputs become ready only when waited for counts what is in flight.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decompvae import parallel
from experiments.runner import devices
from experiments.runner import steps

XLA_CPU_PROGRAMS_PER_DEVICE = 32   # jaxlib 0.10's TfrtCpuClient admits this many per device


class _Output:
  """A metric of a fake step program: ready only once waited for (the program never finishes on its own)."""

  def __init__(self, value):
    self.value = jnp.asarray(value)
    self.ready = False

  def block_until_ready(self):
    self.ready = True
    return self

  def __jax_array__(self):
    return self.value


class _FakeProgram:
  """`(state, x) -> (state + x, {"m": [[state]]})`, recording how many outputs were un-ready at each dispatch."""

  def __init__(self):
    self.outputs = []
    self.in_flight = []

  def __call__(self, state, x):
    out = _Output([[state]])
    self.outputs.append(out)
    self.in_flight.append(sum(not o.ready for o in self.outputs))
    return state + x, {"m": out}


@pytest.fixture(autouse=True)
def _cpu_path(monkeypatch):
  monkeypatch.setattr(devices, "on_cpu", lambda: True)   # the CPU path on any backend


def test_the_limit_is_below_xla_cpus():
  assert 1 <= steps.CPU_MAX_STEPS_IN_FLIGHT < XLA_CPU_PROGRAMS_PER_DEVICE


def test_one_call_of_many_steps_keeps_the_limit_and_equals_single_steps():
  program, n = _FakeProgram(), 3 * XLA_CPU_PROGRAMS_PER_DEVICE
  state, metrics = steps.fused_calls(lambda k: program, n)(0, 2)
  assert len(program.in_flight) == n
  assert max(program.in_flight) <= steps.CPU_MAX_STEPS_IN_FLIGHT
  assert state == 2 * n
  np.testing.assert_array_equal(np.asarray(metrics["m"]), 2 * np.arange(n)[None])


def test_the_limit_holds_across_calls_of_one_step():
  """The benchmark and the loop (one step per call by default) call the one-step function repeatedly."""
  program = _FakeProgram()
  fn = steps.fused_calls(lambda k: program, 1)
  state, history = 0, []
  for _ in range(3 * XLA_CPU_PROGRAMS_PER_DEVICE):
    state, metrics = fn(state, 1)
    history.append(metrics["m"].value)
  assert max(program.in_flight) <= steps.CPU_MAX_STEPS_IN_FLIGHT
  np.testing.assert_array_equal(np.concatenate(history, axis=-1), np.arange(len(history))[None])


def test_data_parallel_steps_fused_equal_single_steps():
  """A real two-device step with an all-reduce: `fused_calls` gives the single steps' states and metrics."""
  mesh = parallel.make_mesh(jax.devices()[:2])
  rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def step(w, x):
    h = jnp.tanh(jax.lax.with_sharding_constraint(x, split) @ w)
    return w * (1 - 1e-2 * jnp.mean(h)), {"m": jnp.mean(h)[None, None]}   # mean over the split batch

  one = jax.jit(step, in_shardings=(rep, split), out_shardings=(rep, rep))
  w0 = jax.device_put(jnp.eye(16) * 0.9, rep)
  x = jax.device_put(jnp.linspace(-1.0, 1.0, 8 * 16).reshape(8, 16), split)
  n = 12
  w_fused, metrics = steps.fused_calls(lambda k: one, n)(w0, x)
  w, single = w0, []
  for _ in range(n):
    w, m = one(w, x)
    single.append(np.asarray(m["m"]))
  assert metrics["m"].shape == (1, n)
  np.testing.assert_array_equal(np.asarray(metrics["m"]), np.concatenate(single, axis=-1))
  np.testing.assert_array_equal(np.asarray(w_fused), np.asarray(w))
