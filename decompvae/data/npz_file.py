"""The real dSprites file, dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz: a thorough, streaming reader."""

from __future__ import annotations

import contextlib
import math
import pathlib
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from decompvae.data import packing
from decompvae.data.errors import DataError

NPZ_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
NPZ_URL = "https://github.com/deepmind/dsprites-dataset/raw/master/" + NPZ_FILENAME
KEYS = ("imgs", "latents_classes", "latents_values", "metadata")
# What reading a damaged archive or .npy member raises: a bad zip structure or CRC, a broken deflate stream, a
# stream that ends early, a bad .npy header.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError)


class NpzContents(NamedTuple):
  """The file's images and factor grid, without the constant colour factor."""

  packed: np.ndarray  # uint8 [N, 512]: the images, bit-packed (see `packing`), in the file's order
  factor_sizes: tuple[int, ...]  # (shape, scale, orientation, posX, posY) class counts
  value_tables: tuple[np.ndarray, ...]  # the value of each class of each factor, from `latents_values`


_FIX = (f"Download {NPZ_FILENAME} (again) from {NPZ_URL} and pass the path of the downloaded file, or use the "
        "offline renderer instead.")


def _bad(path, problem: str) -> DataError:
  return DataError(f"dSprites file {path} {problem}. {_FIX}")


@contextlib.contextmanager
def _reading(path, member: str):
  """Turns an error raised while reading `member` of the archive into a DataError naming the file."""
  try:
    yield
  except DataError:
    raise
  except _READ_ERRORS as e:
    raise _bad(path, f"is damaged: its member {member} cannot be read ({type(e).__name__}: {e}); the file "
               "is probably truncated or corrupted, e.g. by an interrupted download") from e


def _read_member(archive: zipfile.ZipFile, path, name: str) -> np.ndarray:
  with _reading(path, name + ".npy"), archive.open(name + ".npy") as f:
    return np.lib.format.read_array(f, allow_pickle=False)


def _read_metadata(archive: zipfile.ZipFile, path):
  # The real file's metadata is a Python 2 pickle: its byte strings must be read as latin1. Unpickling a
  # damaged pickle can raise almost any exception, all of them caused by the file.
  with _reading(path, "metadata.npy"), archive.open("metadata.npy") as f:
    try:
      metadata = np.lib.format.read_array(f, allow_pickle=True, pickle_kwargs={"encoding": "latin1"})
    except Exception as e:  # pylint: disable=broad-except
      raise _bad(path, f"is damaged: its metadata cannot be read ({type(e).__name__}: {e})") from e
  return metadata.item() if isinstance(metadata, np.ndarray) and metadata.dtype == object else metadata


def _pack_images_streaming(archive: zipfile.ZipFile, path, num_examples: int, chunk: int = 16384) -> np.ndarray:
  """Bit-packs `imgs` (uint8 [N, 64, 64] in {0, 1}) chunk by chunk, never holding the whole uint8 array."""
  size = packing.IMAGE_SIZE
  with _reading(path, "imgs.npy"), archive.open("imgs.npy") as f:
    read_header = (np.lib.format.read_array_header_1_0 if np.lib.format.read_magic(f) == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran_order, dtype = read_header(f)
    expected = (num_examples, size, size)
    if dtype != np.uint8 or tuple(shape) != expected or fortran_order:
      raise _bad(path, f"holds imgs as {'Fortran-ordered ' * fortran_order}{dtype} {tuple(shape)}; they must "
                 f"be C-ordered uint8 {expected} (binary 64×64 images, one per factor combination)")
    packed = np.empty((num_examples, packing.PACKED_BYTES), np.uint8)
    for start in range(0, num_examples, chunk):
      n = min(chunk, num_examples - start)
      block = np.frombuffer(f.read(n * size * size), np.uint8)
      if block.size != n * size * size:
        raise EOFError(f"imgs ends after {start * size * size + block.size} of {num_examples * size * size} "
                       "bytes")
      if block.max(initial=0) > 1:
        raise _bad(path, f"holds image values up to {block.max()} (images {start}..{start + n - 1}); dSprites "
                   "images are binary, 0 or 1")
      packed[start:start + n] = packing.pack(block.reshape(n, size, size))
  return packed


def read_npz(path) -> NpzContents:
  """Reads the real `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`, checking it thoroughly.

  The file holds `imgs` (uint8 [N, 64, 64] in {0, 1}), `latents_classes` and `latents_values` ([N, 6]: colour,
  shape, scale, orientation, posX, posY) and a pickled `metadata` dict (Python 2 pickle: read with
  encoding='latin1') whose `latents_sizes` gives the factor grid. The images must be in row-major factor order
  and every value must be consistent; the constant colour factor is dropped. A file on a smaller grid in the
  same format is accepted (the caller decides whether to warn). The images are bit-packed while streaming
  from the archive (peak memory ≈ the packed 377 MB).

  Args:
      path: path of the .npz file.

  Returns:
      `NpzContents`: the packed images, the factor sizes and value tables of the five real factors.

  Raises:
      DataError: the file is missing, empty, not a zip archive, truncated or damaged, or its arrays have
          other keys, shapes, dtypes, values or order than the real file's.

  References:
      Matthey et al. (2017), github.com/deepmind/dsprites-dataset (dsprites_reloading_example.ipynb).
  """
  path = pathlib.Path(path).expanduser()
  if not path.exists():
    raise DataError(f"dSprites file {path} not found. {_FIX}")
  if not path.is_file():
    raise DataError(f"dSprites file {path} is a directory, not the .npz file. {_FIX}")
  if path.stat().st_size == 0:
    raise _bad(path, "is empty (0 bytes), e.g. left by a failed download")
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise _bad(path, f"is not a readable .npz (zip) archive ({type(e).__name__}: {e}): it is truncated, e.g. "
               "by an interrupted download, or not the dSprites file at all") from e
  with archive:
    return _read_archive(archive, path)


def _read_archive(archive: zipfile.ZipFile, path: pathlib.Path) -> NpzContents:
  """The checks of `read_npz` on an open archive."""
  missing = [k for k in KEYS if k + ".npy" not in archive.namelist()]
  if missing:
    raise _bad(path, f"is missing the arrays {missing}; the dSprites .npz holds {list(KEYS)}")
  metadata = _read_metadata(archive, path)
  if not isinstance(metadata, dict) or "latents_sizes" not in metadata:
    raise _bad(path, "has no metadata dict with 'latents_sizes' (the real file has one)")
  try:
    sizes = tuple(int(s) for s in np.asarray(metadata["latents_sizes"]).ravel())
  except (TypeError, ValueError) as e:
    raise _bad(path, f"has metadata latents_sizes that are not integers ({e})") from e
  if len(sizes) != 6 or sizes[0] != 1 or min(sizes) < 1:
    raise _bad(path, f"has latents_sizes {sizes}; they must be 6 positive sizes (colour, shape, scale, "
               "orientation, posX, posY) with one colour, as in the real file (1, 3, 6, 40, 32, 32)")
  n = math.prod(sizes)
  classes = _read_member(archive, path, "latents_classes")
  values = _read_member(archive, path, "latents_values")
  for name, array, kind in (("latents_classes", classes, "i"), ("latents_values", values, "f")):
    if array.shape != (n, 6) or array.dtype.kind != kind:
      raise _bad(path, f"holds {name} as {array.dtype} {array.shape}; it must be "
                 f"{'integer' if kind == 'i' else 'float'} [{n}, 6] for latents_sizes {sizes}")
  grid = np.stack(np.unravel_index(np.arange(n), sizes), 1)
  if not np.array_equal(classes, grid):
    raise _bad(path, f"has latents_classes that are not the row-major grid of latents_sizes {sizes}; the "
               "images must be in the original order (posY fastest)")
  first = [np.searchsorted(grid[:, k], np.arange(s)) for k, s in enumerate(sizes)]  # a row with each class
  tables = tuple(values[f, k] for k, f in enumerate(first))
  if not np.array_equal(values, np.stack([t[c] for t, c in zip(tables, grid.T)], 1)):
    raise _bad(path, "has latents_values that are not a function of latents_classes")
  packed = _pack_images_streaming(archive, path, n)
  return NpzContents(packed, sizes[1:], tables[1:])
