"""Counts XLA:CPU collective aborts over many short data-parallel runs: a benchmark with a count.

  nice -n 10 python -m benchmarks.stress_collectives --runs=30              # 30 x train_speed --only=dsprites
  nice -n 10 python -m benchmarks.stress_collectives --runs=10 --max_in_flight=0      # the limit removed
  nice -n 10 python -m benchmarks.stress_collectives --runs=10 --max_in_flight=4,16   # alternated limits
  nice -n 10 python -m benchmarks.stress_collectives --mode=train --experiment=pinwheel --runs=5 \
      --train_steps=2000 --args=--config.train.steps_per_call=100                    # the training loop
  nice -n 10 python -m benchmarks.stress_collectives --mode=minimal --runs=6 --max_in_flight=0

Each run is a subprocess on the CPU split into one XLA device per core (as the experiments do):
- `bench`: `python -m benchmarks.train_speed --only=dsprites` (the command of the bug report), plus `--args`;
- `train`: `python -m experiments.<--experiment> --smoke` for `--train_steps` steps in a fresh workdir,
  plus `--args`. The loop fetches each call's metrics after the next call, so with the default one step
  per call the host stays at most two steps ahead; `--config.train.steps_per_call` lets it run further;
- `minimal`: a tiny data-parallel step (an all-reduce in a while loop's condition, as in the batch gather,
  and one after it) dispatched `--calls` times by one call of `experiments.runner.steps.fused_calls`. It
  isolates the dispatch pattern from the model; runs take seconds.

`--max_in_flight` replaces `experiments.runner.steps.CPU_MAX_STEPS_IN_FLIGHT` in the run's process (0: no
limit, the behaviour before the fix); several values are used in turn, run i taking value i mod their
number, so that variants alternate on a loaded machine. Without it the runs use the code as it is.

A run is `ok` (exit 0), `abort` (killed by a signal, or XLA's rendezvous termination message), `hang` (killed
after `--timeout_s` with a rendezvous reported stuck), `timeout` (killed after `--timeout_s`, only slow) or
`error` (any other failure). One JSON line per run, then a summary with the counts (per limit when
`--max_in_flight` is given) and, for `bench`, the images/s of the ok runs. `--out_dir` keeps every run's
output (default: a temporary directory, named in the summary). `train` runs also report their training
rate (the median steps/s of their progress lines after the first).
"""

import collections
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_enum("mode", "bench", ["bench", "train", "minimal"], "What each run does (see the module doc).")
flags.DEFINE_integer("runs", 10, "Number of runs.")
flags.DEFINE_integer("jobs", 1, "Runs at a time.")
flags.DEFINE_integer("timeout_s", 3600, "A run still going after this long is killed (outcome `timeout`; "
                     "`hang` if XLA reported a rendezvous as stuck).")
flags.DEFINE_list("max_in_flight", [], "Step programs in flight at most, replacing "
                  "steps.CPU_MAX_STEPS_IN_FLIGHT in each run (0: no limit); several alternate over the runs.")
flags.DEFINE_list("args", [], "Extra arguments for each run's command.")
flags.DEFINE_list("env", [], "NAME=VALUE environment settings for the runs (e.g. PJRT_NPROC=4).")
flags.DEFINE_string("xla_flags", "", "Appended to XLA_FLAGS for the runs, e.g. "
                    "--xla_cpu_collective_call_terminate_timeout_seconds=15 to detect hangs sooner.")
flags.DEFINE_enum("experiment", "dsprites", ["dsprites", "pinwheel"], "--mode=train: the experiment.")
flags.DEFINE_integer("train_steps", 2000, "--mode=train: training steps per run.")
flags.DEFINE_integer("calls", 200, "--mode=minimal: calls per run.")
flags.DEFINE_string("out_dir", None, "Directory for each run's output (default: a temporary one).")
flags.DEFINE_bool("minimal_child", False, "Internal: run one --mode=minimal run in this process.")
FLAGS = flags.FLAGS

_ABORT_MESSAGE = "Termination timeout for"
_STUCK_MESSAGE = "may be stuck"
_NO_LIMIT = 10**9

# Runs `python -m <module> <args>` with the limit replaced: `python -c _WITH_LIMIT <limit> <module> <args>`.
_WITH_LIMIT = ("import runpy, sys; from experiments.runner import steps; "
               "steps.CPU_MAX_STEPS_IN_FLIGHT = int(sys.argv.pop(1)) or " + str(_NO_LIMIT) + "; "
               "module = sys.argv.pop(1); sys.argv[0] = module; "
               "runpy.run_module(module, run_name='__main__', alter_sys=True)")


def _command(run_dir: str, limit: int | None) -> list[str]:
  if FLAGS.mode == "minimal":
    return [sys.executable, "-m", "benchmarks.stress_collectives", "--minimal_child", f"--calls={FLAGS.calls}",
            *([] if limit is None else [f"--max_in_flight={limit}"]), *FLAGS.args]
  if FLAGS.mode == "bench":
    module, args = "benchmarks.train_speed", ["--only=dsprites"]
  else:
    module = f"experiments.{FLAGS.experiment}"
    args = ["--smoke", f"--steps={FLAGS.train_steps}", f"--workdir={run_dir}", "--config.eval.figures=False",
            "--config.train.checkpoint_every_steps=1000000", "--config.train.log_every_steps=500"]
    if FLAGS.experiment == "dsprites":
      args += ["--prior=anisotropic", "--config.optim.batch_size=64"]
  python = [sys.executable, "-m"] if limit is None else [sys.executable, "-c", _WITH_LIMIT, str(limit)]
  return [*python, module, *args, *FLAGS.args]


def _outcome(returncode: int | None, output: str) -> str:
  if returncode is None:
    return "hang" if _STUCK_MESSAGE in output else "timeout"
  if returncode < 0 or (returncode != 0 and _ABORT_MESSAGE in output):
    return "abort"
  return "ok" if returncode == 0 else "error"


def _images_per_s(output: str) -> float | None:
  """The dsprites images/s from the line train_speed prints when the case is done, if any."""
  for line in output.splitlines():
    if line.startswith('{"dsprites":'):
      try:
        return json.loads(line)["dsprites"]["images_per_s"]
      except (ValueError, KeyError):
        return None
  return None


def _steps_per_s(output: str) -> float | None:
  """The median training rate of the progress lines after the first (which includes compilation), if any."""
  rates = [float(r) for r in re.findall(r"\| ([0-9.]+) steps/s", output)][1:]
  return statistics.median(rates) if rates else None


def _launch(i: int, log_dir: str, limit: int | None) -> dict:
  run_dir = os.path.join(log_dir, f"run{i:03d}")
  env = dict(os.environ)
  env.update(kv.split("=", 1) for kv in FLAGS.env)
  if FLAGS.xla_flags:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FLAGS.xla_flags}".strip()
  log = open(os.path.join(log_dir, f"run{i:03d}.log"), "w+")
  proc = subprocess.Popen(_command(run_dir, limit), stdout=log, stderr=subprocess.STDOUT, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return {"i": i, "limit": limit, "proc": proc, "log": log, "start": time.time()}


def _finish(job: dict, returncode: int | None) -> dict:
  job["log"].seek(0)
  output = job["log"].read()
  job["log"].close()
  record = {"run": job["i"], "max_in_flight": job["limit"], "outcome": _outcome(returncode, output),
            "returncode": returncode, "seconds": round(time.time() - job["start"], 1), "log": job["log"].name}
  if returncode is not None and returncode < 0:
    record["signal"] = signal.Signals(-returncode).name
  if FLAGS.mode == "bench":
    record["images_per_s"] = _images_per_s(output)
  if FLAGS.mode == "train":
    record["steps_per_s"] = _steps_per_s(output)
  return record


def _counts(records: list[dict]) -> dict:
  counts = collections.Counter(r["outcome"] for r in records)
  summary = {"runs": len(records), **{k: counts.get(k, 0) for k in ("ok", "abort", "hang", "timeout", "error")}}
  for key in ("images_per_s", "steps_per_s"):
    rates = [r[key] for r in records if r["outcome"] == "ok" and r.get(key)]
    if rates:
      summary[key] = {"median": round(statistics.median(rates), 1), "min": round(min(rates), 1),
                      "max": round(max(rates), 1), "all": [round(r, 1) for r in rates]}
  return summary


def _stress() -> dict:
  log_dir = FLAGS.out_dir or tempfile.mkdtemp(prefix="stress_collectives_")
  os.makedirs(log_dir, exist_ok=True)
  limits = [int(v) for v in FLAGS.max_in_flight] or [None]
  pending, running, records = list(range(FLAGS.runs)), [], []
  while pending or running:
    while pending and len(running) < FLAGS.jobs:
      i = pending.pop(0)
      running.append(_launch(i, log_dir, limits[i % len(limits)]))
    time.sleep(0.5)
    for job in list(running):
      returncode = job["proc"].poll()
      if returncode is None and time.time() - job["start"] > FLAGS.timeout_s:
        job["proc"].kill()
        job["proc"].wait()
      elif returncode is None:
        continue
      running.remove(job)
      records.append(_finish(job, returncode))
      print(json.dumps(records[-1]), flush=True)
  summary = {"mode": FLAGS.mode, "jobs": FLAGS.jobs, "args": FLAGS.args, "env": FLAGS.env,
             "xla_flags": FLAGS.xla_flags, "log_dir": log_dir, **_counts(records)}
  if FLAGS.mode == "train":
    summary.update(experiment=FLAGS.experiment, train_steps=FLAGS.train_steps)
  if FLAGS.mode == "minimal":
    summary.update(calls=FLAGS.calls)
  if FLAGS.max_in_flight:
    summary["by_max_in_flight"] = {str(v): _counts([r for r in records if r["max_in_flight"] == v])
                                   for v in limits}
  return summary


def _minimal_child() -> None:
  """One call of `steps.fused_calls` dispatching `--calls` data-parallel steps with all-reduces."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from decompvae import parallel  # pylint: disable=g-import-not-at-top
  from experiments.runner import devices, steps  # pylint: disable=g-import-not-at-top
  devices.use_cpu_cores()
  if FLAGS.max_in_flight:
    steps.CPU_MAX_STEPS_IN_FLIGHT = int(FLAGS.max_in_flight[0]) or _NO_LIMIT
  mesh = parallel.make_mesh()
  rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def step(w, x):
    x = jax.lax.with_sharding_constraint(x, split)
    x = jax.lax.while_loop(lambda x: jnp.any(x > 1e9), lambda x: x * 0.5, x)   # all-reduce in the condition
    h = x
    for _ in range(8):
      h = jnp.tanh(h @ w)
    return w * (1 - 1e-3 * jnp.mean(h)), {"m": jnp.mean(h)[None]}   # a mean over the split batch: an all-reduce

  one = jax.jit(step, in_shardings=(rep, split), out_shardings=(rep, rep), donate_argnums=0)
  w = jax.device_put(jnp.eye(256) * 0.9, rep)
  x = jax.device_put(jnp.ones((256, 256)), split)
  w, m = one(w, x)
  jax.block_until_ready(m)
  t = time.perf_counter()
  _, metrics = steps.fused_calls(lambda k: one, FLAGS.calls)(w, x)
  jax.block_until_ready(metrics)
  print(json.dumps({"devices": len(mesh.devices), "calls": FLAGS.calls,
                    "max_in_flight": steps.CPU_MAX_STEPS_IN_FLIGHT,
                    "ms_per_call": 1e3 * (time.perf_counter() - t) / FLAGS.calls}))


def main(argv):
  del argv
  if FLAGS.minimal_child:
    _minimal_child()
    return
  print(json.dumps(_stress(), indent=2))


if __name__ == "__main__":
  app.run(main)
