"""End-to-end runs of the experiment entry points on tiny settings: train, checkpoint, resume, evaluate, draw."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import checkpointing
from experiments import configs
from experiments import loop
from experiments import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(experiment="pinwheel", prior=None, steps=6, light_eval=True, **overrides):
  c = configs.get_config(experiment, prior, smoke=True)
  c.optim.num_steps = steps
  if light_eval:   # tests of training mechanics skip the costly parts of evaluation
    c.eval.iwae_samples, c.eval.figures = 0, False
  c.update_from_flattened_dict(overrides)
  return c


def _params(workdir, config):
  """The parameters of the latest checkpoint in `workdir`, restored independently of the training loop."""
  from experiments import tasks  # pylint: disable=g-import-not-at-top
  from decompvae import parallel  # pylint: disable=g-import-not-at-top
  mesh = loop.make_mesh(config)
  data = tasks.load_data(config, mesh)
  run = loop.make_run(config, data)
  abstract = checkpointing.abstract(parallel.replicate(loop.init_state(run, data), mesh))
  mngr = checkpointing.manager(os.path.join(workdir, "checkpoints"))
  step, state = checkpointing.restore_latest(mngr, abstract)
  mngr.close()
  return step, state


def _assert_png(path):
  with open(path, "rb") as f:
    head = f.read(8)
  assert head == PNG_MAGIC and os.path.getsize(path) > 2000, path


@pytest.mark.parametrize("experiment,prior,figures", [
    ("pinwheel", "mixture", ["aggregate_posterior.png"]),
    ("dsprites", "anisotropic", ["reconstructions.png", "prior_samples.png", "traversals.png"]),
    ("fashion_mnist", "sparse", ["reconstructions.png", "class_magnitudes.png"]),
])
def test_train_and_evaluate_end_to_end(tmp_path, experiment, prior, figures):
  if experiment == "fashion_mnist" and not os.path.isdir("/usr/share/datasets/fashion-mnist"):
    pytest.skip("needs Debian's dataset-fashion-mnist")
  # Large networks run on one device here (compiling them for 8 simulated devices takes minutes on 2 cores);
  # the pinwheel run and tests/test_train.py cover the 8-device path.
  c = _config(experiment, prior, steps=4, light_eval=False,
              **{"train.num_devices": 8 if experiment == "pinwheel" else 1})
  summary = loop.train_and_evaluate(c, str(tmp_path))
  m = summary["metrics"]
  assert summary["step"] == 4
  assert np.isfinite(m["test/elbo"]) and np.isfinite(m["test/iwae"])
  assert m["test/iwae"] >= m["test/elbo"] - 1.0      # IWAE (K=8) is a tighter bound, up to MC noise
  if experiment == "dsprites":
    assert 0.0 <= m["test/disentanglement"] <= 1.0
    assert len(m["prior/variances"]) == c.model.latent_dim
  if experiment == "fashion_mnist":
    assert 0.0 <= m["test/hoyer_sparsity"] <= 1.0
    assert np.shape(m["test/per_class_magnitude"]) == (10, c.model.latent_dim)
  for name in figures:
    _assert_png(os.path.join(tmp_path, "figures", name))
  with open(tmp_path / "summary.json") as f:
    assert json.load(f)["step"] == 4
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert any("train/loss" in r for r in rows) and any("test/elbo" in r for r in rows)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
  full = _config(steps=6)
  loop.train_and_evaluate(full, str(tmp_path / "full"))
  loop.train_and_evaluate(_config(steps=3), str(tmp_path / "split"))   # "killed" after 3 steps
  loop.train_and_evaluate(_config(steps=6), str(tmp_path / "split"))   # the same command again resumes
  (s_full, a), (s_split, b) = _params(tmp_path / "full", full), _params(tmp_path / "split", full)
  assert s_full == s_split == 6
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_fused_run_equals_one_step_run(tmp_path):
  loop.train_and_evaluate(_config(steps=6), str(tmp_path / "one"))
  loop.train_and_evaluate(_config(steps=6, **{"train.steps_per_call": 4}), str(tmp_path / "fused"))
  (_, a), (_, b) = _params(tmp_path / "one", _config()), _params(tmp_path / "fused", _config())
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_periodic_evaluation_every_n_epochs(tmp_path):
  c = _config(steps=5, **{"eval.every_epochs": 2})            # pinwheel: one step per epoch
  loop.train_and_evaluate(c, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows if "test/elbo" in r] == [2, 4, 5]   # epochs 2 and 4, then the final one


def test_workdir_with_other_config_is_refused_then_moved_aside(tmp_path):
  loop.train_and_evaluate(_config(steps=2), str(tmp_path))
  with pytest.raises(loop.RunError, match=r"objective.beta: 0.0 -> 4.0"):
    loop.train_and_evaluate(_config(steps=2, **{"objective.beta": 4.0}), str(tmp_path))
  loop.train_and_evaluate(_config(steps=2, **{"objective.beta": 4.0}), str(tmp_path), start_over=True)
  previous = [d for d in os.listdir(tmp_path) if d.startswith("previous-")]
  assert len(previous) == 1
  assert os.path.isdir(tmp_path / previous[0] / "checkpoints")       # the old run is kept, not deleted
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["objective"]["beta"] == 4.0


def test_unreadable_workdir_config_is_refused_not_overwritten(tmp_path):
  (tmp_path / "config.json").write_text('{"objective": {"be')         # e.g. a crash mid-write by old code
  with pytest.raises(loop.RunError, match="config.json is not a readable config"):
    loop.prepare_workdir(str(tmp_path), _config(), start_over=False)
  assert (tmp_path / "config.json").read_text() == '{"objective": {"be'
  loop.prepare_workdir(str(tmp_path), _config(), start_over=True)
  assert json.loads((tmp_path / "config.json").read_text())["experiment"] == "pinwheel"


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
  c = _config(steps=6, **{"train.checkpoint_every_steps": 2})
  loop.train_and_evaluate(c, str(tmp_path))
  latest = tmp_path / "checkpoints" / "6"
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  step, _ = _params(tmp_path, c)
  assert step == 4


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  c = _config(steps=6, **{"optim.learning_rate": 1e30, "train.checkpoint_every_steps": 1})
  with pytest.raises(FloatingPointError, match="step"):
    loop.train_and_evaluate(c, str(tmp_path))
  mngr = checkpointing.manager(str(tmp_path / "checkpoints"))
  steps = mngr.all_steps()
  mngr.close()
  assert max(steps, default=0) < 6
  if steps:
    _, state = _params(tmp_path, c)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_meshes_use_as_many_devices_as_split_the_work():
  assert loop.make_mesh(_config(**{"optim.batch_size": 12})).devices.size == 6       # of 8
  assert loop.make_mesh(_config(**{"optim.batch_size": 12, "train.num_devices": 4})).devices.size == 4
  with pytest.raises(loop.RunError, match="does not split evenly over 5 devices"):
    loop.train_and_evaluate(_config(**{"optim.batch_size": 12, "train.num_devices": 5}), "/nonexistent")
  with pytest.raises(loop.RunError, match="does not split evenly over 5 devices"):
    c = _config(**{"optim.batch_size": 12, "train.num_devices": 5})
    sweep.train_sweep(c, sweep.members(c, _sweep(beta="1,2")), "/nonexistent", vectorise=False)
  assert [sweep.member_mesh(s).devices.size for s in (1, 3, 4, 12, 16)] == [1, 3, 4, 6, 8]
  assert sweep.member_mesh(4, max_devices=2).devices.size == 2


@pytest.mark.parametrize("vectorise", [True, False])
def test_sweep_member_equals_solo_run(tmp_path, monkeypatch, vectorise):
  # Four members on two devices: vmapped, each device trains two of them; not vmapped, each member in turn
  # is data-parallel over both. The vmapped sweep runs as on GPU/TPU: 2 steps per call in a lax.scan.
  fused = {}
  if vectorise:
    monkeypatch.setattr(loop, "on_cpu", lambda: False)
    fused = {"train.steps_per_call": 2}
  # The first 2 steps run the other way: the checkpoint layout is the same, so a sweep resumes across them.
  first = _config(steps=2, **{"train.num_devices": 2}, **fused)
  sweep.train_sweep(first, sweep.members(first, _sweep(beta="0,1,2,3")), str(tmp_path / "sweep"),
                    vectorise=not vectorise)
  base = _config(steps=4, **{"train.num_devices": 2}, **fused)
  members = sweep.members(base, _sweep(beta="0,1,2,3"))
  assert sorted(members) == ["beta=0", "beta=1", "beta=2", "beta=3"]
  sweep.train_sweep(base, members, str(tmp_path / "sweep"), vectorise=vectorise)
  solo = _config(steps=4, **{"objective.beta": 1.0}, **fused)
  loop.train_and_evaluate(solo, str(tmp_path / "solo"))
  (_, a), (_, b) = _params(tmp_path / "sweep" / "members" / "beta=1", solo), _params(tmp_path / "solo", solo)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
  assert os.path.exists(tmp_path / "sweep" / "members" / "beta=1" / "summary.json")
  rows = [json.loads(line) for line in open(tmp_path / "sweep" / "members" / "beta=1" / "metrics.jsonl")]
  assert [r["step"] for r in rows if "train/loss" in r] == [2, 4]       # resumed at 2, not restarted


def test_a_sweep_workdir_refuses_other_members_and_single_runs(tmp_path):
  c = _config(steps=2)
  sweep.train_sweep(c, sweep.members(c, _sweep(beta="0,1")), str(tmp_path))
  with pytest.raises(loop.RunError, match=r"sweep_members: \['beta=0', 'beta=1'\] -> \['beta=4', 'beta=8'\]"):
    sweep.train_sweep(c, sweep.members(c, _sweep(beta="4,8")), str(tmp_path))
  with pytest.raises(loop.RunError, match="sweep_members: .* -> '<absent>'"):
    loop.train_and_evaluate(c, str(tmp_path))
  loop.train_and_evaluate(c, str(tmp_path / "single"))
  with pytest.raises(loop.RunError, match="sweep_members: '<absent>' -> "):
    sweep.train_sweep(c, sweep.members(c, _sweep(beta="0,1")), str(tmp_path / "single"))
  longer = _config(steps=3)
  sweep.train_sweep(longer, sweep.members(longer, _sweep(beta="0,1")), str(tmp_path))   # the same sweep resumes
  rows = [json.loads(line) for line in open(tmp_path / "members" / "beta=1" / "metrics.jsonl")]
  assert [r["step"] for r in rows if "train/loss" in r] == [2, 3]


def _sweep(**kw):
  s = sweep.sweep_config()
  s.update(kw)
  return s


def _cli(module, *args, **kw):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, **kw)


def test_bad_flag_values_give_usage_errors():
  r = _cli("experiments.dsprites", "--prior=gaussian")
  assert r.returncode != 0 and "isotropic|anisotropic|student_t" in r.stderr
  r = _cli("experiments.fashion_mnist", "--divergence=wasserstein")
  assert r.returncode != 0 and "mmd_dim" in r.stderr
  r = _cli("experiments.pinwheel", "--cpu_devices=0")
  assert r.returncode != 0 and "--cpu_devices=0: 0 is not a positive integer" in r.stderr


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.pinwheel", "--smoke", "--steps=1000000", f"--workdir={tmp_path}",
       "--config.train.checkpoint_every_steps=1000000"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  while not os.path.exists(tmp_path / "metrics.jsonl") and time.time() < deadline and proc.poll() is None:
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert "saved a checkpoint" in out
  mngr = checkpointing.manager(str(tmp_path / "checkpoints"))
  assert mngr.latest_step() and mngr.latest_step() > 0
  mngr.close()
