"""Two JAX processes on one CPU machine (localhost coordinator): replicated values, and a sweep that trains,
checkpoints and resumes."""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_two(command):
  """Runs `command(process_id, port)` (an argument list) as two processes; their outputs."""
  port = _free_port()
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(command(i, port), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _launch(workdir, steps, *extra):
  return _run_two(lambda i, port: [
      sys.executable, "-m", "experiments.pinwheel", "--smoke", f"--steps={steps}", f"--workdir={workdir}",
      "--multiprocess", f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}",
      "--config.train.checkpoint_every_steps=2", *extra])


# Each process replicates the same host values (one all-gather of fingerprints, counted), then values that
# differ in one leaf. Each result is printed in one write, which XLA's own output on the same pipe cannot split.
_REPLICATE = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.experimental import multihost_utils
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from decompvae import parallel
gathers = []
gather = multihost_utils.process_allgather
multihost_utils.process_allgather = lambda *a, **k: gathers.append(1) or gather(*a, **k)
mesh = parallel.make_mesh()
tree = {"w": np.arange(6.0).reshape(2, 3), "step": jnp.zeros((), jnp.int32), "seeds": [np.uint32(7)]}
out = parallel.replicate(tree, mesh)
for leaf, value in zip(jax.tree.leaves(out), (7, 0, [[0, 1, 2], [3, 4, 5]])):   # seeds, step, w
  assert not leaf.is_fully_addressable and leaf.sharding.spec == jax.sharding.PartitionSpec()
  for shard in leaf.addressable_shards:
    np.testing.assert_array_equal(shard.data, value)
print(f"dtypes {[str(leaf.dtype) for leaf in jax.tree.leaves(out)]} gathers {len(gathers)}")
try:
  parallel.replicate({"w": np.ones(3), "seed": np.array(int(sys.argv[2]))}, mesh)
except ValueError as e:
  print(f"error: {e}")
"""


def test_replicate_checks_every_leaf_with_one_gather_and_names_the_leaf_that_differs():
  outs = _run_two(lambda i, port: [sys.executable, "-c", _REPLICATE, f"localhost:{port}", str(i)])
  for out in outs:
    assert "dtypes ['uint32', 'int32', 'float32'] gathers 1" in out, out[-3000:]
    assert "error: replicate: processes passed different values for ['seed']" in out, out[-3000:]


def test_two_processes_train_a_sweep_checkpoint_and_resume(tmp_path):
  # On CPU a sweep's members train in turn, each an ordinary run over both processes' devices. The first
  # launch evaluates lightly (evaluation settings may change on resume); the second evaluates in full.
  outs = _launch(tmp_path, 4, "--sweep.beta=0,1", "--config.eval.iwae_samples=0", "--config.eval.figures=False")
  assert "process 0/2" in outs[0] and "process 1/2" in outs[1]
  outs = _launch(tmp_path, 6, "--sweep.beta=0,1")       # the same command with more steps resumes each member
  assert outs[0].count("Resumed from step 4.") == 2, outs[0][-3000:]
  for member in ("beta=0", "beta=1"):
    workdir = tmp_path / "members" / member
    assert max(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == 6
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6]   # one writer: process 0 only
    with open(workdir / "summary.json") as f:
      summary = json.load(f)
    assert summary["step"] == 6 and summary["metrics"]["test/iwae_stderr"] > 0
    assert os.path.getsize(workdir / "figures" / "aggregate_posterior.png") > 0
