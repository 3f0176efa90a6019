"""dSprites: the factor grid, the `DSprites` dataset, and `load_dsprites` (renderer, real file or TFDS)."""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time

import numpy as np
from absl import logging

from decompvae.data import cache
from decompvae.data import npz_file
from decompvae.data import packing
from decompvae.data import render
from decompvae.data import tfds_source
from decompvae.data.npz_file import NPZ_FILENAME
from decompvae.data.npz_file import NPZ_URL
from decompvae.data.packing import PACKED_BYTES

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_EXAMPLES = math.prod(FACTOR_SIZES)  # 737,280
SOURCES = ("auto", "render", "npz", "tfds")


def factor_value_tables() -> tuple[np.ndarray, ...]:
  """The value of each class of each factor, as in the real file's `latents_values`.

  Returns:
      shape {1, 2, 3} (square, ellipse, heart), scale linspace(0.5, 1, 6), orientation linspace(0, 2π, 40)
      (both ends included), pos_x and pos_y linspace(0, 1, 32); float64.

  References:
      Matthey et al. (2017), dSprites, github.com/deepmind/dsprites-dataset; docs/science.md §7.
  """
  return (
      np.arange(1.0, 4.0),
      np.linspace(0.5, 1.0, 6),
      np.linspace(0.0, 2.0 * np.pi, 40),
      np.linspace(0.0, 1.0, 32),
      np.linspace(0.0, 1.0, 32),
  )


@dataclasses.dataclass(frozen=True, eq=False)
class DSprites:
  """Images on a full factor grid, stored bit-packed, in row-major factor order (last factor fastest).

  Provides what the disentanglement metrics sample from (the `GroundTruthData` interface of
  disentanglement_lib: factor sizes, `sample_factors`, `sample_observations_from_factors`). Image i has factor
  classes `np.unravel_index(i, factor_sizes)`; for dSprites i = shape·245760 + scale·40960 + orientation·1024 +
  pos_x·32 + pos_y. The images are never held as float32: `packed` is uint8 [N, 512] (np.packbits of the
  64×64 binary image, bit order "big") and `images` unpacks only the rows asked for.

  References:
      Matthey et al. (2017), dSprites; Locatello et al. (2019), disentanglement_lib `GroundTruthData`.
  """

  packed: np.ndarray  # uint8 [N, 512]
  factor_sizes: tuple[int, ...] = FACTOR_SIZES
  value_tables: tuple[np.ndarray, ...] = dataclasses.field(default_factory=factor_value_tables)
  factor_names: tuple[str, ...] = FACTOR_NAMES
  source: str = "render"  # "render", "npz" or "tfds": where the images came from

  def __post_init__(self):
    n = math.prod(self.factor_sizes)
    if self.packed.shape != (n, PACKED_BYTES) or self.packed.dtype != np.uint8:
      raise ValueError(f"packed must be uint8 [{n}, {PACKED_BYTES}] for factor sizes {self.factor_sizes}; "
                       f"got {self.packed.dtype} {self.packed.shape}")
    if tuple(len(t) for t in self.value_tables) != tuple(self.factor_sizes):
      raise ValueError(f"value_tables sizes {[len(t) for t in self.value_tables]} != {self.factor_sizes}")

  @property
  def num_examples(self) -> int:
    return self.packed.shape[0]

  @functools.cached_property
  def factor_classes(self) -> np.ndarray:
    """int32 [N, K]: row i holds the factor classes of image i."""
    return np.stack(np.unravel_index(np.arange(self.num_examples), self.factor_sizes), 1).astype(np.int32)

  @functools.cached_property
  def factor_values(self) -> np.ndarray:
    """float64 [N, K]: row i holds the factor values of image i (see `factor_value_tables`)."""
    return np.stack([t[c] for t, c in zip(self.value_tables, self.factor_classes.T)], 1)

  def index(self, factors: np.ndarray) -> np.ndarray:
    """Row-major image index of each row of factor classes `factors` [n, K]."""
    return np.ravel_multi_index(tuple(np.asarray(factors).T), self.factor_sizes)

  def images(self, indices) -> np.ndarray:
    """float32 [n, 64, 64, 1] in {0, 1}: the images at `indices`."""
    return packing.unpack(self.packed[np.atleast_1d(indices)]).astype(np.float32)[..., None]

  def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
    """int [num, K]: factor classes drawn uniformly and independently."""
    return rng.integers(0, self.factor_sizes, size=(num, len(self.factor_sizes)))

  def sample_observations_from_factors(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 [n, 64, 64, 1]: the image of each row of factor classes (dSprites is noiseless; `rng` unused)."""
    del rng
    return self.images(self.index(factors))


def render_dsprites(factor_classes: np.ndarray | None = None, *, num_threads: int | None = None) -> np.ndarray:
  """Renders dSprites images for rows of factor classes (default: all 737,280, in row-major order).

  Args:
      factor_classes: int [n, 5] (shape, scale, orientation, pos_x, pos_y classes), or None for the full grid.
      num_threads: worker threads (default: the CPU count).

  Returns:
      uint8 [n, 512] bit-packed images (377 MB for the full grid).

  References:
      Matthey et al. (2017), dSprites; docs/science.md §7.
  """
  if factor_classes is None:
    factor_classes = np.stack(np.unravel_index(np.arange(NUM_EXAMPLES), FACTOR_SIZES), 1)
  factor_classes = np.asarray(factor_classes)
  if factor_classes.ndim != 2 or factor_classes.shape[1] != len(FACTOR_SIZES):
    raise ValueError(f"factor_classes must be int [n, {len(FACTOR_SIZES)}]; got shape {factor_classes.shape}")
  if np.any(factor_classes < 0) or np.any(factor_classes >= np.asarray(FACTOR_SIZES)):
    raise ValueError(f"factor classes out of range; sizes are {dict(zip(FACTOR_NAMES, FACTOR_SIZES))}")
  _, scale, orientation, pos_x, pos_y = (t[c] for t, c in zip(factor_value_tables(), factor_classes.T))
  return render.render_sprites(factor_classes[:, 0], scale, orientation, pos_x, pos_y, num_threads=num_threads)


def _rendered(cache_dir) -> DSprites:
  """The full rendered set; read from or written to <cache_dir>/dsprites_render_v<version>.npy if a directory
  is given, else rendered in memory and nothing written."""
  start = time.perf_counter()
  if cache_dir is None:
    packed = render_dsprites()
    logging.info("dSprites source: rendered offline, not cached (%.1f s)", time.perf_counter() - start)
  else:
    path = pathlib.Path(cache_dir).expanduser() / f"dsprites_render_v{render.RENDER_VERSION}.npy"
    packed, cached = cache.cached_array(path, render_dsprites, (NUM_EXAMPLES, PACKED_BYTES))
    logging.info("dSprites source: rendered offline (%s %s, %.1f s)", "read from the cache" if cached else
                 "rendered and cached at", path, time.perf_counter() - start)
  return DSprites(packed, source="render")


def load_npz(path) -> DSprites:
  """Loads the real `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`, checked thoroughly (see `npz_file`).

  A file on a smaller grid in the same format is accepted with a warning (the tests use one).

  Args:
      path: path of the .npz file.

  Returns:
      `DSprites` with source "npz".

  Raises:
      DataError: the file is missing, truncated, damaged or not the dSprites file.

  References:
      Matthey et al. (2017), github.com/deepmind/dsprites-dataset.
  """
  packed, sizes, tables = npz_file.read_npz(path)
  if sizes != FACTOR_SIZES:
    logging.warning("dSprites file %s holds the sub-grid %s, not the full %s.", path, sizes, FACTOR_SIZES)
  logging.info("dSprites source: real file %s (%d images)", path, len(packed))
  return DSprites(packed, sizes, tables, source="npz")


def load_tfds(data_dir=None, *, download: bool = False, chunk: int = 8192) -> DSprites:
  """Loads TFDS `dsprites` (split 'train') from `data_dir` into the row-major packed layout.

  Args:
      data_dir: the TFDS data directory.
      download: allow TFDS to download and prepare the dataset into `data_dir` (network, ~30 MB).
      chunk: examples read per request.

  Returns:
      `DSprites` with source "tfds".

  Raises:
      DataError: no `data_dir`, or the dataset is not prepared there (and `download` is false), or is
          incomplete.

  References:
      TFDS catalogue `dsprites`; Matthey et al. (2017).
  """
  packed = tfds_source.read_dsprites(data_dir, FACTOR_SIZES, download=download, chunk=chunk)
  logging.info("dSprites source: TFDS 'dsprites' from %s", data_dir)
  return DSprites(packed, source="tfds")


def load_dsprites(source: str = "auto", *, path=None, data_dir=None, cache_dir=None,
                  download: bool = False) -> DSprites:
  """Loads dSprites from the real file, TFDS or the offline renderer; logs which one was used.

  source="auto" takes the real file if `path` is given, else TFDS if `data_dir` is given and holds a prepared
  `dsprites` (or `download` is true), else the renderer (the offline default). Nothing is downloaded unless
  `download` is true (TFDS only), and nothing is written unless `cache_dir` is given (renderer) or `download`
  is true (into `data_dir`).

  Args:
      source: one of "auto", "render", "npz", "tfds".
      path: the real .npz file (source "npz"/"auto").
      data_dir: the TFDS data directory (source "tfds"/"auto").
      cache_dir: a directory in which to cache the rendered set (377 MB, checksummed), reused by later calls;
          None renders it (~1 min on 2 cores) without writing anything.
      download: allow TFDS to download and prepare `dsprites` into `data_dir`.

  Returns:
      `DSprites`.

  Raises:
      DataError: the requested data are missing or unusable (the message says how to fix it).

  References:
      Matthey et al. (2017), dSprites; docs/science.md §7.
  """
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
  if source == "npz" or (source == "auto" and path is not None):
    if path is None:
      raise ValueError(f"source='npz' needs path=, the {NPZ_FILENAME} file (download it from {NPZ_URL})")
    return load_npz(path)
  if source == "tfds":
    return load_tfds(data_dir, download=download)
  if source == "auto" and (download or tfds_source.is_prepared("dsprites", data_dir)):
    return load_tfds(data_dir, download=download)
  if source == "auto" and data_dir is not None:
    logging.info("dSprites: TFDS 'dsprites' is not prepared in %s; rendering offline instead", data_dir)
  return _rendered(cache_dir)
