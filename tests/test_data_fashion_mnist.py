"""Tests of the Fashion-MNIST IDX reader, resizing, scaling and sources."""

import gzip
import pathlib
import struct

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from decompvae.data import DataError
from decompvae.data import fashion_mnist
from decompvae.data import idx_file


def _write_idx(path, array, type_code, compress):
  header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
  pathlib.Path(path).write_bytes(gzip.compress(raw) if compress else raw)


def _write_split(directory, prefix, num, compress, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, num).astype(np.uint8)
  suffix = ".gz" if compress else ""
  _write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x08, compress)
  _write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 0x08, compress)
  return images, labels


def _bilinear(image, size):
  """Bilinear resampling between pixel centres (half-pixel convention, edges clamped), in float."""
  n = image.shape[0]
  pos = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, n - 1)
  w = pos - lo
  rows = image[lo] * (1 - w)[:, None] + image[hi] * w[:, None]
  return rows[:, lo] * (1 - w) + rows[:, hi] * w


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx(tmp_path, compress):
  array = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4) - 5
  _write_idx(tmp_path / "a", array, 0x0C, compress)
  out = idx_file.read_idx(tmp_path / "a")
  assert out.dtype == np.int32 and out.dtype.isnative
  np.testing.assert_array_equal(out, array)


def _pil_resize(images, size):
  """The reference: PIL's own bilinear resize, image by image (what torchvision's Resize calls)."""
  return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
                   for im in images])


@pytest.mark.parametrize("shape, size", [((600, 28, 28), 32), ((40, 17, 23), 40), ((40, 40, 33), 16),
                                         ((40, 28, 28), 28), ((40, 9, 64), 13), ((40, 30, 30), 7)])
def test_resize_is_pils_bilinear_to_the_byte(shape, size):
  rng = np.random.default_rng(sum(shape) + size)
  images = rng.integers(0, 256, shape, dtype=np.uint8)
  images[:20] = np.where(rng.random((20,) + shape[1:]) < 0.5, 0, 255)    # extremes: rounding and clipping
  images[20] = 255
  np.testing.assert_array_equal(fashion_mnist.resize(images, size), _pil_resize(images, size))


def test_read_idx_refuses_bad_files(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
  with pytest.raises(DataError, match="not an IDX file"):
    idx_file.read_idx(tmp_path / "bad")
  _write_idx(tmp_path / "short", np.zeros((4, 5), np.uint8), 0x08, False)
  (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
  with pytest.raises(DataError, match="truncated: its header says"):
    idx_file.read_idx(tmp_path / "short")


@pytest.mark.parametrize("compress", [False, True])
def test_load_from_a_directory(tmp_path, compress):
  images, labels = _write_split(tmp_path, "t10k", 6, compress, seed=0)
  data = fashion_mnist.load_fashion_mnist("test", data_dir=tmp_path)
  assert data.images.shape == (6, 32, 32, 1) and data.images.dtype == np.uint8
  assert data.labels.dtype == np.int32
  np.testing.assert_array_equal(data.labels, labels)
  for got, image in zip(data.images[..., 0], images):
    np.testing.assert_allclose(got, _bilinear(image.astype(float), 32), atol=1.0)


def test_wrong_shapes_are_refused(tmp_path):
  _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 27, 28), np.uint8), 0x08, False)
  _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8), 0x08, False)
  with pytest.raises(DataError, match=r"uint8 \[N, 28, 28\]"):
    fashion_mnist.load_fashion_mnist(data_dir=tmp_path)
  _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8), 0x08, False)
  _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8), 0x08, False)
  with pytest.raises(DataError, match=r"the labels must be uint8 \[3\]"):
    fashion_mnist.load_fashion_mnist(data_dir=tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path):
  with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as error:
    fashion_mnist.load_fashion_mnist(data_dir=tmp_path)
  assert "fashion_mnist" in str(error.value) and "pass the directory holding the IDX files" in str(error.value)
  with pytest.raises(DataError, match="tfds build fashion_mnist"):
    fashion_mnist.load_fashion_mnist(source="tfds", tfds_data_dir=tmp_path)


def test_to_unit_interval():
  u8 = np.array([0, 51, 255], np.uint8)
  x = fashion_mnist.to_unit_interval(u8)
  assert x.dtype == np.float32
  np.testing.assert_allclose(x, [1e-6, 0.2, 1 - 1e-6], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(fashion_mnist.to_unit_interval(jnp.asarray(u8))), x)


def test_tfds_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
    data = fashion_mnist.load_fashion_mnist("train", source="tfds", tfds_data_dir=tmp_path, download=True)
  assert data.images.shape == (7, 32, 32, 1) and data.images.dtype == np.uint8
  assert data.labels.shape == (7,) and np.all((data.labels >= 0) & (data.labels < 10))


@pytest.mark.skipif(not pathlib.Path(fashion_mnist.DEBIAN_DIR).is_dir(),
                    reason="needs `apt-get install dataset-fashion-mnist`")
def test_real_debian_files():
  for split, num in (("train", 60_000), ("test", 10_000)):
    data = fashion_mnist.load_fashion_mnist(split)
    assert data.images.shape == (num, 32, 32, 1)
    if split == "test":
      raw = idx_file.read_idx(pathlib.Path(fashion_mnist.DEBIAN_DIR) / "t10k-images-idx3-ubyte.gz")
      np.testing.assert_array_equal(data.images[..., 0], _pil_resize(raw, 32))
    np.testing.assert_array_equal(np.bincount(data.labels, minlength=10), np.full(10, num // 10))
