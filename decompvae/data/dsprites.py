"""dSprites: an offline renderer of the exact factor grid, the real-file and TFDS loaders, one interface."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import math
import operator
import os
import pathlib
import time
import zipfile

import numpy as np
from absl import logging

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_EXAMPLES = math.prod(FACTOR_SIZES)  # 737,280
IMAGE_SIZE = 64
PACKED_BYTES = IMAGE_SIZE * IMAGE_SIZE // 8  # one image = 512 bytes of np.packbits (bit order "big")
SHAPES = ("square", "ellipse", "heart")
NPZ_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
NPZ_URL = "https://github.com/deepmind/dsprites-dataset/raw/master/" + NPZ_FILENAME
DEFAULT_CACHE_DIR = "~/.cache/decompvae"
SOURCES = ("auto", "render", "npz", "tfds")

# Geometry at scale 1, in pixels (SPEC §7, measured from the published frames). Pixel (row r, column c) covers
# [c, c+1] x [r, r+1]; the renderer samples pixel centres. Sprite centre = 16 + 32 * pos in both axes.
_SQUARE_HALF_SIDE = 10.0  # side 20 px
_ELLIPSE_SEMI_AXES = (13.0, 7.0)  # 26 x 14 px, long axis horizontal at orientation 0
_HEART_SIZE = (20.0, 17.0)  # width x height, lobes up at orientation 0
# The heart is the region (x^2 + y^2 - 1)^3 <= x^2 y^3: x in [-1.1390, 1.1390], y in [-1, 1.2365], area
# centroid at y = 0.2935 (measured on a fine grid). It is stretched to _HEART_SIZE and centred on its centroid,
# so that the centroid is the sprite's position and its rotation centre.
_HEART_HALF_WIDTH, _HEART_Y_RANGE, _HEART_CENTROID_Y = 1.1390, (-1.0, 1.2365), 0.2935
# Radius (px, scale 1) of a disc around the centre that holds each shape whatever its rotation, plus a margin.
_RADIUS = {"square": 10.0 * math.sqrt(2.0) + 0.5, "ellipse": 13.5, "heart": 10.8}
# Bump when the rendered pixels change, so that an old cache is not reused.
_RENDER_VERSION = 1


def factor_value_tables() -> tuple[np.ndarray, ...]:
  """The value of each class of each factor, as in the real file's `latents_values`.

  Returns:
      shape {1, 2, 3} (square, ellipse, heart), scale linspace(0.5, 1, 6), orientation linspace(0, 2π, 40)
      (both ends included), pos_x and pos_y linspace(0, 1, 32); float64.

  References:
      Matthey et al. (2017), dSprites, github.com/deepmind/dsprites-dataset; SPEC §7.
  """
  return (
      np.arange(1.0, 4.0),
      np.linspace(0.5, 1.0, 6),
      np.linspace(0.0, 2.0 * np.pi, 40),
      np.linspace(0.0, 1.0, 32),
      np.linspace(0.0, 1.0, 32),
  )


# ----------------------------------------------------------------------------------------------------------
# The interface.


@dataclasses.dataclass(frozen=True, eq=False)
class DSprites:
  """Images on a full factor grid, stored bit-packed, in row-major factor order (last factor fastest).

  Implements the `GroundTruthData` protocol of the contract. Image i has factor classes
  `np.unravel_index(i, factor_sizes)`; for dSprites i = shape·245760 + scale·40960 + orientation·1024 +
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
    return unpack(self.packed[np.atleast_1d(indices)]).astype(np.float32)[..., None]

  def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
    """int [num, K]: factor classes drawn uniformly and independently."""
    return rng.integers(0, self.factor_sizes, size=(num, len(self.factor_sizes)))

  def sample_observations_from_factors(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 [n, 64, 64, 1]: the image of each row of factor classes (dSprites is noiseless; `rng` unused)."""
    del rng
    return self.images(self.index(factors))


def unpack(packed: np.ndarray) -> np.ndarray:
  """uint8 [..., 64, 64] in {0, 1} from bit-packed rows [..., 512] (np.packbits, bit order "big").

  References:
      SPEC §7 (bit-packing).
  """
  return np.unpackbits(packed, axis=-1).reshape(*packed.shape[:-1], IMAGE_SIZE, IMAGE_SIZE)


# ----------------------------------------------------------------------------------------------------------
# The renderer.


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Whether points (u right, v up; px at scale 1, in the sprite's own frame) are inside the shape."""
  if shape == "square":
    return (np.abs(u) <= _SQUARE_HALF_SIDE) & (np.abs(v) <= _SQUARE_HALF_SIDE)
  if shape == "ellipse":
    a, b = _ELLIPSE_SEMI_AXES
    return np.square(u / a) + np.square(v / b) <= 1.0
  x2 = np.square(u * (2.0 * _HEART_HALF_WIDTH / _HEART_SIZE[0]))
  y = v * ((_HEART_Y_RANGE[1] - _HEART_Y_RANGE[0]) / _HEART_SIZE[1]) + _HEART_CENTROID_Y
  y2 = np.square(y)
  return (x2 + y2 - 1.0) ** 3 <= x2 * y2 * y


def _lattice(offsets: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Distinct sampling offsets near the sprite, and for each row of `offsets` [m, 64] the window onto them.

  Returns:
      distinct: sorted offsets with |offset| <= radius (duplicates up to rounding merged);
      window: int [m, L], for the L consecutive pixels from `start` that hold every pixel within the radius,
          the index of the pixel's offset in `distinct` (len(distinct) when outside the radius);
      start: int [m], the first pixel of each window (clipped so that the window stays on the canvas).
  """
  offsets = np.round(offsets, 9)
  near = np.abs(offsets) <= radius  # contiguous in each row: offsets are monotone in the pixel index
  distinct, inverse = np.unique(offsets[near], return_inverse=True)
  index = np.full(offsets.shape, len(distinct), np.int32)
  index[near] = inverse
  length = max(int(near.sum(1).max()), 1)
  start = np.minimum(np.argmax(near, axis=1), offsets.shape[1] - length)
  window = np.take_along_axis(index, start[:, None] + np.arange(length), axis=1)
  return distinct, window, start


def _render_group(shape: str, scale: float, angle: float, pos_x: np.ndarray, pos_y: np.ndarray) -> np.ndarray:
  """Packed images [n, 512] of one (shape, scale, angle) at the positions (pos_x[i], pos_y[i]).

  The sprite is evaluated once per distinct sampling offset: a pixel centre's offset from the sprite centre
  depends on the column and pos_x only (x) and on the row and pos_y only (y). With the dSprites grid the
  offsets fall on a lattice of pitch 1/31 px, so one mask of at most ~900×900 samples per (shape, scale,
  angle) serves all 1,024 positions; each image gathers its window (the pixels within the sprite's radius)
  from the mask and is zero elsewhere.
  """
  centres = 16.0 + 32.0 * np.asarray([pos_x, pos_y], np.float64)
  (xs, x_of), (ys, y_of) = (np.unique(c, return_inverse=True) for c in centres)
  pixel = np.arange(IMAGE_SIZE) + 0.5
  radius = _RADIUS[shape] * scale
  ux, col, col0 = _lattice(pixel[None, :] - xs[:, None], radius)  # offsets right of the centre
  uy, row, row0 = _lattice(ys[:, None] - pixel[None, :], radius)  # offsets above it (rows go down, as posY)
  # Rotating the sprite by +angle (counter-clockwise on screen) = rotating the sample points by -angle.
  cos, sin = math.cos(angle), math.sin(angle)
  mask = np.zeros((len(uy) + 1, len(ux) + 1), bool)  # last row / column: outside the radius, always off
  ux, uy = ux.astype(np.float32) / scale, uy.astype(np.float32) / scale
  mask[:-1, :-1] = _inside(shape, np.add.outer(uy * sin, ux * cos), np.subtract.outer(uy * cos, ux * sin))
  n, rows, cols = len(x_of), row.shape[1], col.shape[1]
  images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), bool)
  images[np.arange(n)[:, None, None],
         (row0[y_of][:, None] + np.arange(rows))[:, :, None],
         (col0[x_of][:, None] + np.arange(cols))[:, None, :]] = mask.ravel()[
             row[y_of][:, :, None] * mask.shape[1] + col[x_of][:, None, :]]
  return np.packbits(images.reshape(n, -1), axis=-1)


def render_sprites(shape, scale, orientation, pos_x, pos_y, *, num_threads: int | None = None) -> np.ndarray:
  """Renders dSprites-like binary images for arbitrary factor values, bit-packed.

  Image i shows shape SHAPES[shape[i]] scaled by scale[i] (square side 20·scale px, ellipse 26×14·scale px,
  heart 20×17·scale px with its lobes up), rotated counter-clockwise on screen by orientation[i] radians about
  its centre (the heart's area centroid), centred at column 16 + 32·pos_x[i] and row 16 + 32·pos_y[i] (pixel
  rows counted from the top: pos_x = 0 is the left edge, pos_y = 0 the top). A pixel is on iff its centre is
  inside the sprite. Deterministic; pure numpy, vectorised per (shape, scale, orientation), threaded across
  them (numpy releases the GIL).

  Args:
      shape: int [n] in {0, 1, 2}; scale, orientation, pos_x, pos_y: float [n] (broadcast together).
      num_threads: worker threads (default: the CPU count).

  Returns:
      uint8 [n, 512]: np.packbits of each 64×64 image (see `unpack`).

  References:
      Matthey et al. (2017), dSprites; SPEC §7 for the measured geometry.
  """
  shape, scale, orientation, pos_x, pos_y = np.broadcast_arrays(
      np.asarray(shape, np.int64), *(np.asarray(a, np.float64) for a in (scale, orientation, pos_x, pos_y)))
  if shape.ndim != 1:
    raise ValueError(f"factor values must be 1-D after broadcasting; got shape {shape.shape}")
  if shape.size and (shape.min() < 0 or shape.max() >= len(SHAPES)):
    raise ValueError(f"shape must be in 0..{len(SHAPES) - 1} ({SHAPES})")
  triples, group = np.unique(np.stack([shape, scale, orientation], 1), axis=0, return_inverse=True)
  group = group.ravel()
  out = np.empty((len(shape), PACKED_BYTES), np.uint8)

  def render(g):
    members = np.flatnonzero(group == g)
    s, sc, th = triples[g]
    out[members] = _render_group(SHAPES[int(s)], sc, th, pos_x[members], pos_y[members])

  with concurrent.futures.ThreadPoolExecutor(num_threads or os.cpu_count()) as pool:
    list(pool.map(render, range(len(triples))))
  return out


def render_dsprites(factor_classes: np.ndarray | None = None, *, num_threads: int | None = None) -> np.ndarray:
  """Renders dSprites images for rows of factor classes (default: all 737,280, in row-major order).

  Args:
      factor_classes: int [n, 5] (shape, scale, orientation, pos_x, pos_y classes), or None for the full grid.
      num_threads: worker threads (default: the CPU count).

  Returns:
      uint8 [n, 512] bit-packed images (377 MB for the full grid).

  References:
      Matthey et al. (2017), dSprites; SPEC §7.
  """
  if factor_classes is None:
    factor_classes = np.stack(np.unravel_index(np.arange(NUM_EXAMPLES), FACTOR_SIZES), 1)
  factor_classes = np.asarray(factor_classes)
  if factor_classes.ndim != 2 or factor_classes.shape[1] != len(FACTOR_SIZES):
    raise ValueError(f"factor_classes must be int [n, {len(FACTOR_SIZES)}]; got shape {factor_classes.shape}")
  if np.any(factor_classes < 0) or np.any(factor_classes >= np.asarray(FACTOR_SIZES)):
    raise ValueError(f"factor classes out of range; sizes are {dict(zip(FACTOR_NAMES, FACTOR_SIZES))}")
  tables = factor_value_tables()
  _, scale, orientation, pos_x, pos_y = (t[c] for t, c in zip(tables, factor_classes.T))
  return render_sprites(factor_classes[:, 0], scale, orientation, pos_x, pos_y, num_threads=num_threads)


# ----------------------------------------------------------------------------------------------------------
# The cache of the rendered set: <cache_dir>/dsprites_render_v<version>.npy plus a .json with its sha256.


def _sha256(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def _atomic_write(path: pathlib.Path, write) -> None:
  """Writes through `write(file)` to a temporary name, then renames: no half-written file ever looks complete."""
  tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
  with open(tmp, "wb") as f:
    write(f)
  os.replace(tmp, path)


def _cached_array(path: pathlib.Path, build, shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
  """uint8 array `shape` read from `path` (an .npy with a .json sidecar holding its sha256), else `build()`.

  A file that cannot be read, has another shape or fails its checksum is reported (warning), built again and
  replaced. Returns the array and whether it came from the file.
  """
  meta_path = path.with_suffix(".json")
  if path.exists():
    try:
      array = np.load(path, allow_pickle=False)
      if array.dtype != np.uint8 or array.shape != shape:
        problem = f"holds {array.dtype} {array.shape}, expected uint8 {shape}"
      elif _sha256(array) != json.loads(meta_path.read_text())["sha256"]:
        problem = "fails its sha256 checksum"
      else:
        return array, True
    except (OSError, ValueError, KeyError, EOFError) as e:  # unreadable, truncated, no or bad .json
      problem = f"cannot be read ({type(e).__name__}: {e})"
    logging.warning("Cache %s %s: not trusted, building it again.", path, problem)
  array = build()
  path.parent.mkdir(parents=True, exist_ok=True)
  _atomic_write(path, lambda f: np.save(f, array))
  _atomic_write(meta_path, lambda f: f.write(json.dumps({"sha256": _sha256(array),
                                                          "shape": list(array.shape)}).encode()))
  return array, False


def render_cached(cache_dir=None) -> DSprites:
  """The rendered dSprites, from the cache in `cache_dir` (default ~/.cache/decompvae), rendering if needed.

  The cache is <cache_dir>/dsprites_render_v<version>.npy (377 MB) with a .json holding its sha256; a cache
  file with the wrong shape or checksum is reported, rendered again and replaced.

  References:
      SPEC §7.
  """
  path = pathlib.Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / f"dsprites_render_v{_RENDER_VERSION}.npy"
  start = time.perf_counter()
  packed, cached = _cached_array(path, render_dsprites, (NUM_EXAMPLES, PACKED_BYTES))
  logging.info("dSprites source: rendered offline (%s %s, %.1f s)", "read from the cache" if cached else
               "rendered and cached at", path, time.perf_counter() - start)
  return DSprites(packed, source="render")


# ----------------------------------------------------------------------------------------------------------
# The real file.


def _read_npy_member(archive: zipfile.ZipFile, name: str, allow_pickle: bool = False):
  # The real file's metadata is a Python 2 pickle: its byte strings must be read as latin1.
  with archive.open(name + ".npy") as f:
    return np.lib.format.read_array(f, allow_pickle=allow_pickle, pickle_kwargs={"encoding": "latin1"})


def _pack_images_streaming(archive: zipfile.ZipFile, num_examples: int, chunk: int = 16384) -> np.ndarray:
  """Bit-packs `imgs` (uint8 [N, 64, 64] in {0, 1}) chunk by chunk, never holding the whole uint8 array."""
  with archive.open("imgs.npy") as f:
    read_header = (np.lib.format.read_array_header_1_0 if np.lib.format.read_magic(f) == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran_order, dtype = read_header(f)
    expected = (num_examples, IMAGE_SIZE, IMAGE_SIZE)
    if dtype != np.uint8 or tuple(shape) != expected or fortran_order:
      raise ValueError(f"imgs must be C-ordered uint8 {expected} (binary 64×64 images, one per factor "
                       f"combination); got {'Fortran-ordered ' * fortran_order}{dtype} {tuple(shape)}")
    packed = np.empty((num_examples, PACKED_BYTES), np.uint8)
    for start in range(0, num_examples, chunk):
      n = min(chunk, num_examples - start)
      block = np.frombuffer(f.read(n * IMAGE_SIZE * IMAGE_SIZE), np.uint8)
      if block.size != n * IMAGE_SIZE * IMAGE_SIZE:
        raise ValueError("imgs is truncated")
      if block.max(initial=0) > 1:
        raise ValueError(f"imgs must hold 0/1 values; found {block.max()} (images {start}..{start + n - 1})")
      packed[start:start + n] = np.packbits(block.reshape(n, -1), axis=-1)
  return packed


def load_npz(path) -> DSprites:
  """Loads the real `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`, checking it thoroughly.

  The file holds `imgs` (uint8 [N, 64, 64] in {0, 1}), `latents_classes` and `latents_values` ([N, 6]: colour,
  shape, scale, orientation, posX, posY) and a pickled `metadata` dict (Python 2 pickle: read with
  encoding='latin1') whose `latents_sizes` gives the factor grid. The images must be in row-major factor order
  and every value must be consistent; the constant colour factor is dropped. A file on a smaller grid in the
  same format is accepted (with a warning), which the tests use.

  Args:
      path: path of the .npz file.

  Returns:
      `DSprites` with source "npz".

  References:
      Matthey et al. (2017), github.com/deepmind/dsprites-dataset (dsprites_reloading_example.ipynb).
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f"dSprites file {path} not found. Download {NPZ_FILENAME} from {NPZ_URL} and "
                            "pass its path (source='npz', path=...), or use source='render' (offline).")
  required = ("imgs", "latents_classes", "latents_values", "metadata")
  with zipfile.ZipFile(path) as archive:
    missing = [k for k in required if k + ".npy" not in archive.namelist()]
    if missing:
      raise ValueError(f"{path} is missing keys {missing}; a dSprites npz holds {list(required)}")
    metadata = _read_npy_member(archive, "metadata", allow_pickle=True)
    metadata = metadata.item() if isinstance(metadata, np.ndarray) and metadata.dtype == object else metadata
    if not isinstance(metadata, dict) or "latents_sizes" not in metadata:
      raise ValueError(f"{path}: metadata must be a dict with 'latents_sizes' (as in the real file)")
    sizes = tuple(int(s) for s in np.asarray(metadata["latents_sizes"]).ravel())
    if len(sizes) != 6 or sizes[0] != 1:
      raise ValueError(f"{path}: latents_sizes must be 6 sizes (colour, shape, scale, orientation, posX, "
                       f"posY) with one colour, as in the real file (1, 3, 6, 40, 32, 32); got {sizes}")
    n = math.prod(sizes)
    classes = _read_npy_member(archive, "latents_classes")
    values = _read_npy_member(archive, "latents_values")
    for name, array, kind in (("latents_classes", classes, "i"), ("latents_values", values, "f")):
      if array.shape != (n, 6) or array.dtype.kind != kind:
        raise ValueError(f"{name} must be {'integer' if kind == 'i' else 'float'} [{n}, 6] for "
                         f"latents_sizes {sizes}; got {array.dtype} {array.shape}")
    grid = np.stack(np.unravel_index(np.arange(n), sizes), 1)
    if not np.array_equal(classes, grid):
      raise ValueError(f"{path}: latents_classes are not the row-major grid of latents_sizes {sizes}; the "
                       "images must be in the original order (posY fastest)")
    first = [np.searchsorted(grid[:, k], np.arange(s)) for k, s in enumerate(sizes)]  # a row with each class
    tables = tuple(values[f, k] for k, f in enumerate(first))
    if not np.array_equal(values, np.stack([t[c] for t, c in zip(tables, grid.T)], 1)):
      raise ValueError(f"{path}: latents_values are not a function of latents_classes")
    packed = _pack_images_streaming(archive, n)
  if sizes[1:] != FACTOR_SIZES:
    logging.warning("dSprites file %s holds the sub-grid %s, not the full %s.", path, sizes[1:], FACTOR_SIZES)
  logging.info("dSprites source: real file %s (%d images)", path, n)
  return DSprites(packed, sizes[1:], tables[1:], source="npz")


# ----------------------------------------------------------------------------------------------------------
# TFDS (random access through tfds.data_source: array_record files, no TensorFlow needed).

_TFDS_LABELS = ("label_shape", "label_scale", "label_orientation", "label_x_position", "label_y_position")


def open_tfds(name: str, split: str, data_dir, download: bool, flag_hint: str):
  """`tfds.data_source(name, split)` from `data_dir`; FileNotFoundError saying how to prepare it if absent.

  Nothing is downloaded unless `download` is true. `tfds.data_source` reads the array_record file format
  without TensorFlow (records are parsed with TFDS's bundled protos, images decoded with PIL).

  References:
      TFDS `tfds.data_source` documentation.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, optional source)

  how = (f"Prepare it with `tfds build {name} --file_format=array_record --data_dir=DIR` (needs network) and "
         f"pass that directory ({flag_hint}), or ask for the download explicitly (download=True).")
  if data_dir is None and not download:
    raise FileNotFoundError(f"TFDS '{name}' needs a data_dir. {how}")
  if not download and not tfds.builder(name, data_dir=data_dir).is_prepared():
    raise FileNotFoundError(f"TFDS '{name}' is not prepared in {data_dir}. {how}")
  if download:
    logging.info("TFDS: downloading and preparing '%s' into %s if it is not there yet", name, data_dir)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
  except NotImplementedError as e:  # prepared as TFRecord only: no random access
    raise ValueError(f"TFDS '{name}' in {data_dir} has no array_record files ({e}). {how}") from e


def load_tfds(data_dir=None, *, download: bool = False, chunk: int = 8192) -> DSprites:
  """Loads TFDS `dsprites` (split 'train') from `data_dir` into the row-major packed layout.

  TFDS stores the examples in a shuffled order; each example is put back at the row-major index of its
  `label_*` classes, and the split must hold every factor combination exactly once.

  Args:
      data_dir: the TFDS data directory.
      download: allow TFDS to download and prepare the dataset (network, ~30 MB).
      chunk: examples read per request.

  Returns:
      `DSprites` with source "tfds".

  References:
      TFDS catalogue `dsprites`; Matthey et al. (2017).
  """
  source = open_tfds("dsprites", "train", data_dir, download, "source='tfds', data_dir=DIR")
  if len(source) != NUM_EXAMPLES:
    raise ValueError(f"TFDS dsprites in {data_dir} has {len(source)} examples; expected {NUM_EXAMPLES}")
  packed = np.zeros((NUM_EXAMPLES, PACKED_BYTES), np.uint8)
  seen = np.zeros(NUM_EXAMPLES, bool)
  for start in range(0, NUM_EXAMPLES, chunk):
    records = source.__getitems__(range(start, min(start + chunk, NUM_EXAMPLES)))
    images = np.stack([r["image"] for r in records])
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1) or images.max(initial=0) > 1:
      raise ValueError(f"TFDS dsprites images must be 0/1 of shape (64, 64, 1); got {images.shape[1:]}, "
                       f"max {images.max()}")
    labels = np.array(list(map(operator.itemgetter(*_TFDS_LABELS), records)))
    index = np.ravel_multi_index(tuple(labels.T), FACTOR_SIZES)
    packed[index] = np.packbits(images.reshape(len(images), -1), axis=-1)
    seen[index] = True
  if not seen.all():
    raise ValueError(f"TFDS dsprites in {data_dir} misses {np.sum(~seen)} factor combinations (duplicates)")
  logging.info("dSprites source: TFDS 'dsprites' from %s", data_dir)
  return DSprites(packed, source="tfds")


# ----------------------------------------------------------------------------------------------------------


def load_dsprites(source: str = "auto", *, path=None, data_dir=None, cache_dir=None,
                  download: bool = False) -> DSprites:
  """Loads dSprites from the real file, TFDS or the offline renderer; logs which one was used.

  source="auto" takes the real file if `path` is given, else TFDS if `data_dir` is given and holds a prepared
  `dsprites`, else the renderer (the offline default, cached under `cache_dir`). Nothing is downloaded unless
  `download` is true (TFDS only).

  Args:
      source: one of "auto", "render", "npz", "tfds".
      path: the real .npz file (source "npz"/"auto").
      data_dir: the TFDS data directory (source "tfds"/"auto").
      cache_dir: where the rendered set is cached (default ~/.cache/decompvae).
      download: allow TFDS to download and prepare `dsprites`.

  Returns:
      `DSprites`, the `GroundTruthData` of the contract.

  References:
      Matthey et al. (2017), dSprites; SPEC §7.
  """
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
  if source == "npz" or (source == "auto" and path is not None):
    if path is None:
      raise ValueError(f"source='npz' needs path= the {NPZ_FILENAME} file (download it from {NPZ_URL})")
    return load_npz(path)
  if source == "tfds" or (source == "auto" and (data_dir is not None or download)):
    try:
      return load_tfds(data_dir, download=download)
    except FileNotFoundError as e:
      if source == "tfds":
        raise
      logging.info("dSprites: no TFDS data (%s); rendering offline instead", e)
  return render_cached(cache_dir)
