"""Two JAX processes on one CPU machine (localhost coordinator): train, checkpoint, resume; a sweep."""

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


def _launch(workdir, steps, *extra):
  port = _free_port()
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.pinwheel", "--smoke", f"--steps={steps}", f"--workdir={workdir}",
       "--multiprocess", f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}",
       "--config.train.checkpoint_every_steps=2", *extra],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def test_two_processes_train_checkpoint_and_resume(tmp_path):
  outs = _launch(tmp_path, 4)
  assert "process 0/2" in outs[0] and "process 1/2" in outs[1]
  _launch(tmp_path, 6)                     # the same command with more steps resumes from step 4
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert steps[-1] == 6
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train_steps = [r["step"] for r in rows if "train/loss" in r]
  assert train_steps == sorted(set(train_steps))          # one writer: process 0 only
  assert {2, 4, 6} <= set(train_steps)
  with open(tmp_path / "summary.json") as f:
    assert json.load(f)["step"] == 6


def test_two_processes_train_a_sweep(tmp_path):
  _launch(tmp_path, 4, "--sweep.beta=0,1")
  for member in ("beta=0", "beta=1"):
    rows = [json.loads(line) for line in open(tmp_path / "members" / member / "metrics.jsonl")]
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4]      # one writer: process 0 only
    with open(tmp_path / "members" / member / "summary.json") as f:
      assert json.load(f)["step"] == 4
