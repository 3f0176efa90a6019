"""Every missing or damaged data file raises DataError with a message naming the file and the fix."""

import gzip
import math
import pathlib
import struct

import numpy as np
import pytest

from decompvae import data as data_lib
from decompvae.data import DataError
from decompvae.data import dsprites
from decompvae.data import fashion_mnist
from decompvae.data import idx_file

SMALL = (1, 3, 2, 3, 2, 2)  # a sub-grid in the real dSprites format


def _write_npz(path):
  n = math.prod(SMALL)
  classes = np.stack(np.unravel_index(np.arange(n), SMALL), 1).astype(np.int64)
  values = classes.astype(np.float64)
  imgs = np.random.default_rng(0).integers(0, 2, (n, 64, 64)).astype(np.uint8)
  np.savez_compressed(path, imgs=imgs, latents_classes=classes, latents_values=values,
                      metadata={"latents_sizes": np.array(SMALL)})
  return imgs


def _write_idx(path, array, compress):
  raw = (struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
         + array.astype(np.uint8).tobytes())
  pathlib.Path(path).write_bytes(gzip.compress(raw) if compress else raw)


def _fashion_dir(directory, compress=True, num=5):
  directory.mkdir(exist_ok=True)
  rng = np.random.default_rng(0)
  suffix = ".gz" if compress else ""
  _write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (num, 28, 28)), compress)
  _write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, num), compress)
  return directory


def test_data_error_is_a_value_error_exported_by_the_package():
  assert data_lib.DataError is DataError and issubclass(DataError, ValueError)


# ---------------------------------------------------------------- the dSprites .npz


def _npz_error(path) -> str:
  with pytest.raises(DataError) as error:
    dsprites.load_dsprites(source="npz", path=path)
  message = str(error.value)
  assert str(path) in message and dsprites.NPZ_URL in message  # which file, and where to get a good one
  assert "\n" not in message
  return message


def test_npz_sanity_the_intact_small_file_loads(tmp_path):
  imgs = _write_npz(tmp_path / "d.npz")
  data = dsprites.load_dsprites(source="npz", path=tmp_path / "d.npz")
  np.testing.assert_array_equal(data.images(np.arange(len(imgs)))[..., 0], imgs)


def test_npz_missing_file(tmp_path):
  assert "not found" in _npz_error(tmp_path / "absent.npz")


def test_npz_directory_instead_of_file(tmp_path):
  assert "is a directory" in _npz_error(tmp_path)


def test_npz_empty_file(tmp_path):
  (tmp_path / "d.npz").write_bytes(b"")
  assert "is empty (0 bytes)" in _npz_error(tmp_path / "d.npz")


def test_npz_random_bytes(tmp_path):
  (tmp_path / "d.npz").write_bytes(np.random.default_rng(0).bytes(5000))
  assert "not a readable .npz (zip) archive" in _npz_error(tmp_path / "d.npz")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_npz_truncated_zip(tmp_path, fraction):
  path = tmp_path / "d.npz"
  _write_npz(path)
  raw = path.read_bytes()
  path.write_bytes(raw[:int(len(raw) * fraction)])
  message = _npz_error(path)
  assert "truncated" in message and "interrupted download" in message


def test_npz_corrupt_member(tmp_path):
  """One flipped byte inside the compressed images: the zip directory is intact, the member is not."""
  path = tmp_path / "d.npz"
  _write_npz(path)
  raw = bytearray(path.read_bytes())
  raw[2000] ^= 0xFF  # inside imgs.npy, the first and largest member
  path.write_bytes(bytes(raw))
  message = _npz_error(path)
  assert "is damaged: its member imgs.npy cannot be read" in message


def test_npz_other_zip(tmp_path):
  np.savez(tmp_path / "other.npz", x=np.zeros(3))
  assert "is missing the arrays" in _npz_error(tmp_path / "other.npz")


# ---------------------------------------------------------------- Fashion-MNIST IDX files


def _fashion_error(directory) -> str:
  with pytest.raises(DataError) as error:
    fashion_mnist.load_fashion_mnist("test", data_dir=directory)
  message = str(error.value)
  assert "\n" not in message and "data_dir" not in message and "--data" not in message  # names no option
  return message


def test_fashion_sanity_the_intact_files_load(tmp_path):
  assert fashion_mnist.load_fashion_mnist("test", data_dir=_fashion_dir(tmp_path / "f")).labels.shape == (5,)


def test_fashion_missing_directory(tmp_path):
  message = _fashion_error(tmp_path / "absent")
  assert f"{tmp_path / 'absent'} does not exist" in message
  assert "apt-get install dataset-fashion-mnist" in message and "directory holding the IDX files" in message


def test_fashion_empty_directory(tmp_path):
  assert "has no t10k-images-idx3-ubyte[.gz]" in _fashion_error(tmp_path)


def test_fashion_truncated_gz(tmp_path):
  directory = _fashion_dir(tmp_path / "f")
  path = directory / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(path.read_bytes()[:-50])
  message = _fashion_error(directory)
  assert f"IDX file {path} is a truncated or corrupt gzip file (EOFError" in message
  assert "intact copy" in message and "zalandoresearch/fashion-mnist" in message


def test_fashion_corrupt_gz(tmp_path):
  directory = _fashion_dir(tmp_path / "f")
  path = directory / "t10k-labels-idx1-ubyte.gz"
  raw = bytearray(path.read_bytes())
  raw[-6] ^= 0xFF  # the CRC-32 of the uncompressed data
  path.write_bytes(bytes(raw))
  assert f"IDX file {path} is a truncated or corrupt gzip file" in _fashion_error(directory)


def test_fashion_truncated_plain_idx(tmp_path):
  directory = _fashion_dir(tmp_path / "f", compress=False)
  path = directory / "t10k-images-idx3-ubyte"
  path.write_bytes(path.read_bytes()[:-10])
  message = _fashion_error(directory)
  assert f"IDX file {path} is truncated: its header says uint8 (5, 28, 28) (3920 bytes of data)" in message
  assert "the file holds 3910" in message


@pytest.mark.parametrize("content", [b"", b"\x00\x00", b"\x00\x00\x08\x03\x00\x00"])
def test_not_idx_or_cut_in_the_header(tmp_path, content):
  (tmp_path / "x").write_bytes(content)
  with pytest.raises(DataError, match=f"{tmp_path / 'x'} is not an IDX file"):
    idx_file.read_idx(tmp_path / "x")


def test_fashion_wrong_label_count(tmp_path):
  directory = _fashion_dir(tmp_path / "f")
  _write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.zeros(4), True)
  assert "the labels must be uint8 [5]" in _fashion_error(directory)


# ---------------------------------------------------------------- TFDS


def test_tfds_without_a_directory():
  with pytest.raises(DataError, match="TFDS 'dsprites' needs a data directory"):
    dsprites.load_dsprites(source="tfds")
  with pytest.raises(DataError, match="TFDS 'dsprites' needs a data directory"):
    dsprites.load_dsprites(source="tfds", download=True)  # never into TFDS's default ~/tensorflow_datasets


def test_tfds_not_prepared(tmp_path):
  with pytest.raises(DataError, match=f"TFDS 'fashion_mnist' is not prepared in {tmp_path}. Prepare it with "
                     "`tfds build fashion_mnist"):
    fashion_mnist.load_fashion_mnist(source="tfds", tfds_data_dir=tmp_path)


def test_fashion_auto_with_nothing_anywhere(tmp_path, monkeypatch):
  monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "no-debian"))
  with pytest.raises(DataError, match=f"TFDS 'fashion_mnist' is not prepared in {tmp_path}") as error:
    fashion_mnist.load_fashion_mnist(tfds_data_dir=tmp_path)
  assert "apt-get install dataset-fashion-mnist" in str(error.value)
  with pytest.raises(DataError, match="no TFDS data directory was given"):
    fashion_mnist.load_fashion_mnist()


# ---------------------------------------------------------------- not data problems


def test_bad_arguments_are_not_data_errors(tmp_path):
  for call in (lambda: dsprites.load_dsprites(source="web"),
               lambda: dsprites.load_dsprites(source="npz"),
               lambda: dsprites.render_dsprites(np.array([[3, 0, 0, 0, 0]])),
               lambda: fashion_mnist.load_fashion_mnist("validation", data_dir=tmp_path),
               lambda: fashion_mnist.load_fashion_mnist(source="files")):
    with pytest.raises(ValueError) as error:
      call()
    assert not isinstance(error.value, DataError), error.value
