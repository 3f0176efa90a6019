"""Tests of the checksum-verified render cache, and that dSprites is cached only where the caller asks."""

import json
import logging
import os

import numpy as np
import pytest

from decompvae.data import cache
from decompvae.data import dsprites

N = 737_280


def test_cache_is_reused_and_a_corrupt_one_rebuilt(tmp_path, caplog):
  calls = []
  content = np.random.default_rng(0).integers(0, 256, (300, 512), dtype=np.uint8)

  def build():
    calls.append(1)
    return content.copy()

  path = tmp_path / "sub" / "cache.npy"

  def load():
    array, _ = cache.cached_array(path, build, content.shape)
    np.testing.assert_array_equal(array, content)
    return len(calls)

  assert load() == 1 and path.exists()
  assert sorted(p.name for p in path.parent.iterdir()) == ["cache.json", "cache.npy"]  # no temporary files
  assert json.loads(path.with_suffix(".json").read_text()) == {"sha256": cache.sha256(content),
                                                               "shape": [300, 512]}
  assert load() == 1  # reused
  with open(path, "r+b") as f:  # flip one data byte
    f.seek(-100, 2)
    byte = f.read(1)
    f.seek(-100, 2)
    f.write(bytes([byte[0] ^ 1]))
  with caplog.at_level(logging.WARNING):
    assert load() == 2
  assert "checksum" in caplog.text
  assert load() == 2  # repaired
  with open(path, "r+b") as f:
    f.truncate(1000)
  assert load() == 3
  np.save(path, content[:10])
  assert load() == 4
  path.with_suffix(".json").unlink()
  assert load() == 5
  path.with_suffix(".json").write_text("[1, 2]")  # valid JSON, not the sidecar
  assert load() == 6


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "a.npy"
  path.write_bytes(b"old")

  def write(f):
    f.write(b"half")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    cache.atomic_write(path, write)
  assert os.listdir(tmp_path) == ["a.npy"] and path.read_bytes() == b"old"


def test_no_cache_dir_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  packed = np.zeros((N, 512), np.uint8)
  monkeypatch.setattr(dsprites, "render_dsprites", lambda: packed)

  def refuse(*args):
    raise AssertionError(f"the cache was used: {args}")

  monkeypatch.setattr(cache, "cached_array", refuse)
  for data in (dsprites.load_dsprites(source="render"), dsprites.load_dsprites()):
    assert data.source == "render" and data.packed is packed
  assert not list(tmp_path.iterdir())


def test_the_cache_is_where_the_caller_says(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  packed = np.zeros((N, 512), np.uint8)
  calls = []

  def cached_array(path, build, shape):
    calls.append((path, build, shape))
    return packed, True

  monkeypatch.setattr(cache, "cached_array", cached_array)
  data = dsprites.load_dsprites(source="render", cache_dir="~/renders")
  assert data.packed is packed
  [(path, build, shape)] = calls
  assert path == tmp_path / "renders" / "dsprites_render_v1.npy" and shape == (N, 512)
  assert build is dsprites.render_dsprites


@pytest.mark.slow
def test_render_cached_end_to_end(tmp_path):
  first = dsprites.load_dsprites(source="render", cache_dir=tmp_path)
  second = dsprites.load_dsprites(cache_dir=tmp_path)
  assert first.source == second.source == "render"
  np.testing.assert_array_equal(first.packed, second.packed)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["dsprites_render_v1.json", "dsprites_render_v1.npy"]
