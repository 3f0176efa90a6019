"""Tests of the input pipeline: epoch-wise shuffling, determinism, decoding, sharding, host streaming."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from decompvae.data import dsprites
from decompvae.data import fashion_mnist
from decompvae.data import pipeline


def _epoch(seed, epoch, num_examples, batch_size, xp=np):
  per_epoch = num_examples // batch_size
  return np.concatenate([np.asarray(pipeline.batch_indices(seed, t, num_examples=num_examples,
                                                           batch_size=batch_size, xp=xp))
                         for t in range(epoch * per_epoch, (epoch + 1) * per_epoch)])


@pytest.mark.parametrize("num_examples, batch_size", [(1000, 50), (400, 400), (9, 3), (1, 1)])
def test_every_example_once_per_epoch(num_examples, batch_size):
  first, second = (_epoch(11, e, num_examples, batch_size) for e in range(2))
  for order in (first, second):
    assert order.dtype == np.int32
    np.testing.assert_array_equal(np.sort(order), np.arange(num_examples))
  if num_examples >= 10:
    assert not np.array_equal(first, np.sort(first))  # shuffled
    assert not np.array_equal(first, second)  # a new order every epoch


def test_every_dsprites_example_once_per_epoch():
  n = dsprites.NUM_EXAMPLES  # one batch of N = the epoch's permutation
  order = pipeline.batch_indices(5, 0, num_examples=n, batch_size=n, xp=np)
  np.testing.assert_array_equal(np.bincount(order, minlength=n), np.ones(n))
  assert abs(np.corrcoef(order, np.arange(n))[0, 1]) < 0.01


def test_last_partial_batch_is_dropped():
  dropped = []
  for epoch in range(3):
    order = _epoch(0, epoch, 1003, 50)
    assert len(order) == 1000 and len(np.unique(order)) == 1000
    dropped.append(set(range(1003)) - set(order.tolist()))
  assert dropped[0] != dropped[1] != dropped[2]  # not always the same examples
  assert pipeline.steps_per_epoch(1003, 50) == 20
  with pytest.raises(ValueError, match="batch_size"):
    pipeline.steps_per_epoch(10, 11)


def test_same_seed_and_step_same_batch_in_numpy_and_jax():
  f = jax.jit(lambda seed, step: pipeline.batch_indices(seed, step, num_examples=5000, batch_size=32))
  for seed, step in ((0, 0), (3, 157), (2**31 - 1, 10**6)):
    expected = pipeline.batch_indices(seed, step, num_examples=5000, batch_size=32, xp=np)
    np.testing.assert_array_equal(np.asarray(f(seed, step)), expected)
    np.testing.assert_array_equal(np.asarray(f(seed, step)), np.asarray(f(seed, step)))
  assert not np.array_equal(np.asarray(f(0, 5)), np.asarray(f(1, 5)))
  assert not np.array_equal(np.asarray(f(0, 5)), np.asarray(f(0, 6)))


def _datasets():
  rng = np.random.default_rng(0)
  packed = rng.integers(0, 256, (96, 512), dtype=np.uint8)
  bits = np.unpackbits(packed, axis=1).reshape(96, 64, 64, 1).astype(np.float32)
  images = rng.integers(0, 256, (80, 32, 32, 1), dtype=np.uint8)
  points = rng.standard_normal((40, 2))
  return [
      (dsprites.DSprites(packed, (2, 3, 2, 2, 4), tuple(np.arange(s, dtype=float) for s in (2, 3, 2, 2, 4))), bits),
      (fashion_mnist.LabelledImages(images, np.zeros(80, np.int32)),
       np.clip(images / 255.0, 1e-6, 1 - 1e-6).astype(np.float32)),
      (points, points.astype(np.float32)),
  ]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_batches_decode_the_right_examples(which):
  data, decoded = _datasets()[which]
  device_data = pipeline.to_device(data)
  batch_fn = pipeline.make_batch_fn(8)
  for step in (0, 7, 33):
    x = batch_fn(device_data, 4, step)
    idx = pipeline.batch_indices(4, step, num_examples=len(decoded), batch_size=8, xp=np)
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(x), decoded[idx], rtol=1e-6)


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_eight_devices_give_the_same_global_batch(axis_type):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,), devices=jax.devices("cpu")[:8])
  data, _ = _datasets()[0]
  one = pipeline.make_batch_fn(16)(pipeline.to_device(data), 1, 5)
  eight = pipeline.make_batch_fn(16, mesh=mesh)(pipeline.to_device(data, mesh=mesh), 1, 5)
  assert eight.sharding.spec[0] == "data"
  assert {s.data.shape[0] for s in eight.addressable_shards} == {2}
  resident = pipeline.to_device(data, indices=np.arange(10), mesh=mesh)
  for array in (resident.storage, resident.indices):  # the dataset is replicated on every device
    assert array.sharding.spec == P() and array.sharding.is_fully_replicated
    assert len(array.addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(eight), np.asarray(one))
  with pytest.raises(ValueError, match="batch size 12 does not split evenly over 8 devices"):
    pipeline.make_batch_fn(12, mesh=mesh)


def test_host_streaming_matches_the_device_path():
  mesh = jax.make_mesh((8,), ("data",), devices=jax.devices("cpu")[:8])
  data, _ = _datasets()[0]
  on_device = pipeline.make_batch_fn(16, mesh=mesh)(pipeline.to_device(data, mesh=mesh), 2, 9)
  streamed = pipeline.host_batch(data.images, data.num_examples, 2, 9, batch_size=16, mesh=mesh)
  assert streamed.sharding.spec[0] == "data"
  np.testing.assert_array_equal(np.asarray(streamed), np.asarray(on_device))


def test_a_split_is_shuffled_within_itself():
  train, test = pipeline.holdout_split(100, 0.2, seed=0)
  assert len(test) == 20 and len(np.intersect1d(train, test)) == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
  points = np.arange(100.0)[:, None]
  device_data = pipeline.to_device(points, indices=train)
  assert device_data.num_examples == 80
  batch_fn = pipeline.make_batch_fn(20)
  seen = np.concatenate([np.asarray(batch_fn(device_data, 0, t))[:, 0] for t in range(4)])
  np.testing.assert_array_equal(np.sort(seen), train.astype(float))
