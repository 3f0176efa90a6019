"""The runner's guarantees, for a run and for a sweep: exact resumption, checkpoints, signals, NaN, workdirs."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from experiments import pinwheel
from experiments.runner import checkpointing
from experiments.runner import config as config_lib
from experiments.runner import devices
from experiments.runner import evaluation
from experiments.runner import run as run_lib
from experiments.runner import sweep
from experiments.runner import training
from experiments.runner import workdir as workdir_lib
from experiments.runner import writer as writer_lib
from experiments.runner.errors import RunError
from tests import runs

TASK = pinwheel.TASK


def _sweep(**kw):
  s = sweep.sweep_config()
  s.update(kw)
  return s


def _train(c, workdir, **kw):
  return training.train_and_evaluate(TASK, c, str(workdir), **kw)


def _assert_same_params(a, b, exact=True):
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    if exact:
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    else:
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


def test_resumed_run_equals_uninterrupted_run_and_rows_are_not_repeated(tmp_path):
  c = runs.config(steps=6, **{"train.checkpoint_every_steps": 4})
  _train(c, tmp_path / "full")
  _train(runs.config(steps=3), tmp_path / "split")            # "killed" after 3 steps
  _train(c, tmp_path / "split")                                # the same command again resumes
  (s_full, a), (s_split, b) = runs.restore(tmp_path / "full", c), runs.restore(tmp_path / "split", c)
  assert s_full == s_split == 6
  _assert_same_params(a, b)
  # Killed after logging step 6 but before its checkpoint: the rows of steps 5-6 are written again, once.
  checkpointing.manager(str(tmp_path / "full" / "checkpoints")).delete(6)
  _train(c, tmp_path / "full")
  assert runs.rows(tmp_path / "full") == [2, 4, 6]
  assert runs.rows(tmp_path / "full", "test/elbo") == [6]


def test_fused_run_equals_one_step_run(tmp_path):
  _train(runs.config(steps=6), tmp_path / "one")
  _train(runs.config(steps=6, **{"train.steps_per_call": 4}), tmp_path / "fused")
  _assert_same_params(runs.restore(tmp_path / "one", runs.config())[1],
                      runs.restore(tmp_path / "fused", runs.config())[1], exact=False)


def test_periodic_evaluation_every_n_epochs(tmp_path):
  _train(runs.config(steps=5, **{"eval.every_epochs": 2}), tmp_path)      # pinwheel: one step per epoch
  assert runs.rows(tmp_path, "test/elbo") == [2, 4, 5]                   # epochs 2 and 4, then the final one


def test_progress_lines_scale_with_the_run(tmp_path):
  _train(runs.config(steps=40, **{"train.log_every_steps": 0}), tmp_path)
  assert runs.rows(tmp_path) == list(range(2, 41, 2))                    # about 20 lines, not one per 500 steps


def test_evaluation_parts_log_a_handful_of_progress_lines_with_an_eta(monkeypatch, caplog):
  clock = {"now": 1000.0}
  monkeypatch.setattr(evaluation.time, "time", lambda: clock["now"])

  def part(progress):  # 10 s of compilation, then 100 calls of 2 s each
    clock["now"] += 10
    for i in range(1, 101):
      clock["now"] += 2
      progress(i * 10, 1000)
    return "result"

  parts = evaluation.Parts()
  with caplog.at_level("INFO"):
    assert parts("encoding", part) == "result"
  lines = [r.getMessage() for r in caplog.records if "encoding:" in r.getMessage()]
  assert 3 <= len(lines) <= 6, lines
  assert lines[0] == "  encoding: 30/1000 (3%), ETA 0:03:14"              # 97 calls left at 2 s each
  assert parts.seconds["encoding"] == 210


def test_workdir_with_other_config_is_refused_then_moved_aside(tmp_path):
  _train(runs.config(steps=2), tmp_path)
  with pytest.raises(RunError, match=r"objective.beta: 0.0 -> 4.0"):
    _train(runs.config(steps=2, **{"objective.beta": 4.0}), tmp_path)
  _train(runs.config(steps=2, **{"objective.beta": 4.0}), tmp_path, start_over=True)
  previous = [d for d in os.listdir(tmp_path) if d.startswith("previous-")]
  assert len(previous) == 1
  assert os.path.isdir(tmp_path / previous[0] / "checkpoints")         # the old run is kept, not deleted
  assert json.loads((tmp_path / "config.json").read_text())["objective"]["beta"] == 4.0


def test_unreadable_workdir_config_is_refused_not_overwritten(tmp_path):
  (tmp_path / "config.json").write_text('{"objective": {"be')         # e.g. a crash mid-write by old code
  with pytest.raises(RunError, match="config.json is not a readable config"):
    workdir_lib.prepare(str(tmp_path), runs.config(), start_over=False)
  assert (tmp_path / "config.json").read_text() == '{"objective": {"be'
  workdir_lib.prepare(str(tmp_path), runs.config(), start_over=True)
  assert json.loads((tmp_path / "config.json").read_text())["experiment"] == "pinwheel"


def test_a_workdir_in_use_is_refused(tmp_path):
  with workdir_lib.locked(str(tmp_path)):
    with pytest.raises(RunError, match=f"in use by another run \\(process {os.getpid()}"):
      _train(runs.config(steps=2), tmp_path)
  assert not os.path.exists(tmp_path / "config.json")                 # nothing was written
  _train(runs.config(steps=2), tmp_path)                               # released: the run goes ahead


def test_a_relative_workdir_is_the_current_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  summary = _train(runs.config(steps=2), "runs/relative")             # orbax itself needs absolute paths
  assert summary["step"] == 2 and os.path.exists(tmp_path / "runs" / "relative" / "checkpoints" / "2")


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
  c = runs.config(steps=6, **{"train.checkpoint_every_steps": 2})
  _train(c, tmp_path)
  for root, _, files in os.walk(tmp_path / "checkpoints" / "6"):
    for name in files:
      (tmp_path / root / name).write_bytes(b"garbage")
  assert runs.restore(tmp_path, c)[0] == 4


def test_settings_are_checked_before_anything_is_written():
  c = runs.config(**{"objective.beta": -1.0, "optim.num_steps": -1, "model.latent_dim": 0})
  with pytest.raises(RunError) as e:
    config_lib.check(c, TASK)
  for field in ("objective.beta=-1.0", "optim.num_steps=-1", "model.latent_dim=0"):
    assert field in str(e.value)
  config_lib.check(runs.config(), TASK)


def test_meshes_use_as_many_devices_as_split_the_work():
  assert devices.make_mesh(runs.config(**{"optim.batch_size": 12})).devices.size == 6       # of 8
  assert devices.make_mesh(runs.config(**{"optim.batch_size": 12, "train.num_devices": 4})).devices.size == 4
  with pytest.raises(RunError, match="does not split evenly over 5 devices"):
    devices.make_mesh(runs.config(**{"optim.batch_size": 12, "train.num_devices": 5}))
  assert [devices.member_mesh(s).devices.size for s in (1, 3, 4, 12, 16)] == [1, 3, 4, 6, 8]
  assert devices.member_mesh(4, max_devices=2).devices.size == 2


def test_compilation_cache_directory_from_the_flag_then_the_environment():
  home = os.path.expanduser("~")
  assert devices.compilation_cache_dir("/c", {"JAX_COMPILATION_CACHE_DIR": "/j"}) == "/c"     # the flag first
  assert devices.compilation_cache_dir("~/c", {}) == os.path.join(home, "c")
  assert devices.compilation_cache_dir("", {"JAX_COMPILATION_CACHE_DIR": "/j"}) is None       # '' turns it off
  assert devices.compilation_cache_dir(None, {"JAX_COMPILATION_CACHE_DIR": "/j"}) == "/j"
  assert devices.compilation_cache_dir(None, {}) == os.path.join(home, ".cache", "decompvae", "jax")


def test_sweep_members_are_parsed_or_refused():
  c = runs.config()
  assert list(sweep.members(c, _sweep(beta="0,1", seeds=2))) == ["beta=0,seed=0", "beta=0,seed=1",
                                                                 "beta=1,seed=0", "beta=1,seed=1"]
  assert sweep.members(c, _sweep()) == {}
  for bad, message in ((_sweep(beta="1,x"), "comma-separated numbers"), (_sweep(alpha="1,1"), "repeats"),
                       (_sweep(gamma="0.5"), "needs --prior=sparse"), (_sweep(seeds=0), ">= 1")):
    with pytest.raises(RunError, match=message):
      sweep.members(c, bad)


# ------------------------------------------------------------------------------------------------------------
# The loop's guarantees hold for one run and for a vectorised sweep alike (the GPU/TPU program, run here on CPU).


def _sweep_or_run(kind, c, workdir, monkeypatch):
  if kind == "run":
    return _train(c, workdir)
  monkeypatch.setattr(devices, "on_cpu", lambda: False)                # the GPU/TPU program: lax.scan, vmap
  return training.train_sweep(TASK, c, sweep.members(c, _sweep(beta="0,1")), str(workdir), vectorise=True)


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, kind):
  c = runs.config(steps=6, **{"optim.learning_rate": 1e30, "train.checkpoint_every_steps": 1})
  with pytest.raises(FloatingPointError, match="step"):
    _sweep_or_run(kind, c, tmp_path, monkeypatch)
  steps = checkpointing.manager(str(tmp_path / "checkpoints")).all_steps()
  assert max(steps, default=0) < 6


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_sigterm_saves_and_stops_then_resumes(tmp_path, monkeypatch, kind):
  c = runs.config(steps=6, **{"train.checkpoint_every_steps": 100, "train.log_every_steps": 1})
  write = writer_lib.MetricWriter.write

  def write_then_signal(self, step, scalars):   # a preemption notice arrives after step 2 is logged
    write(self, step, scalars)
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(writer_lib.MetricWriter, "write", write_then_signal)
  summary = _sweep_or_run(kind, c, tmp_path, monkeypatch)
  assert "interrupted" in str(summary)
  saved = checkpointing.manager(str(tmp_path / "checkpoints")).all_steps()
  assert len(saved) == 1 and 2 <= saved[0] < 6                          # saved where it stopped, not at the end
  monkeypatch.setattr(writer_lib.MetricWriter, "write", write)
  _sweep_or_run(kind, c, tmp_path, monkeypatch)                          # the same command resumes and finishes
  member = tmp_path if kind == "run" else tmp_path / "members" / "beta=1"
  assert runs.rows(member) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_checkpoints_by_wall_time(tmp_path, monkeypatch, kind):
  c = runs.config(steps=4, **{"train.checkpoint_every_steps": 100, "train.checkpoint_every_secs": 1e-6,
                              "train.max_to_keep": 10})
  _sweep_or_run(kind, c, tmp_path, monkeypatch)
  assert checkpointing.manager(str(tmp_path / "checkpoints")).all_steps() == [1, 2, 3, 4]


@pytest.mark.parametrize("vectorise", [True, False])
def test_sweep_member_equals_solo_run(tmp_path, monkeypatch, vectorise):
  # Vectorised (the GPU/TPU program: 2 steps per call in a lax.scan, 4 members vmapped, 2 per device), or on
  # CPU one member after another, each an ordinary data-parallel run over both devices.
  fused, betas = {}, "0,1"
  if vectorise:
    monkeypatch.setattr(devices, "on_cpu", lambda: False)
    fused, betas = {"train.steps_per_call": 2}, "0,1,2,3"
  base = runs.config(steps=4, **{"train.num_devices": 2}, **fused)
  members = sweep.members(base, _sweep(beta=betas))
  training.train_sweep(TASK, base, members, str(tmp_path / "sweep"), vectorise=vectorise)
  solo = runs.config(steps=4, **{"objective.beta": 1.0}, **fused)
  _train(solo, tmp_path / "solo")
  member = tmp_path / "sweep" / "members" / "beta=1"
  _assert_same_params(runs.restore(member, solo)[1], runs.restore(tmp_path / "solo", solo)[1], exact=False)
  assert json.loads((member / "summary.json").read_text())["step"] == 4
  assert runs.rows(member) == [2, 4]


def test_a_cpu_sweep_resumes_where_it_stopped_and_refuses_other_members(tmp_path, monkeypatch):
  c = runs.config(steps=2)
  trained = []
  original = training.train_and_evaluate
  monkeypatch.setattr(training, "train_and_evaluate",
                      lambda task, config, workdir, **kw: trained.append(config.objective.beta)
                      or original(task, config, workdir, **kw))
  training.train_sweep(TASK, c, sweep.members(c, _sweep(beta="0,1")), str(tmp_path))
  (tmp_path / "members" / "beta=1" / "summary.json").unlink()          # as if stopped before its evaluation
  training.train_sweep(TASK, c, sweep.members(c, _sweep(beta="0,1")), str(tmp_path))
  assert trained == [0.0, 1.0, 1.0]                                    # beta=0 was not trained again
  with pytest.raises(RunError, match=r"sweep_members: \['beta=0', 'beta=1'\] -> \['beta=4', 'beta=8'\]"):
    training.train_sweep(TASK, c, sweep.members(c, _sweep(beta="4,8")), str(tmp_path))
  with pytest.raises(RunError, match="sweep_members: .* -> '<absent>'"):
    _train(c, tmp_path)


def test_pinwheel_network_depth_and_width_come_from_the_config():
  c = runs.config(**{"model.depth": 2, "model.width": 16})
  data = training.load_data(TASK, c, None)
  params = run_lib.init_state(run_lib.make_run(TASK, c, data), data).params["model"]
  kernels = [np.shape(k) for k in jax.tree.leaves(params["encoder"]) if np.ndim(k) == 2]
  assert kernels[:2] == [(2, 16), (16, 16)]                           # x -> 16 -> 16 -> (loc, scale)
