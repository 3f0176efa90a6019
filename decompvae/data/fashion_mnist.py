"""Fashion-MNIST: the IDX files (Debian's dataset-fashion-mnist or any directory) or TFDS, resized to 32×32."""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from absl import logging

from decompvae.data import idx_file
from decompvae.data import tfds_source
from decompvae.data.errors import DataError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # installed by `apt-get install dataset-fashion-mnist`
SPLITS = {"train": "train", "test": "t10k"}  # split -> IDX file prefix
IMAGE_SIZE = 32
EPS = 1e-6  # pixel values are clamped to [EPS, 1 - EPS]
SOURCES = ("auto", "idx", "tfds")
# How to get the data, for the error messages (parameter-neutral: the caller may name its own options).
_HOW_TO_GET = (f"Install the IDX files with `apt-get install dataset-fashion-mnist` (into {DEBIAN_DIR}) or "
               "download them from github.com/zalandoresearch/fashion-mnist, and pass the directory holding the "
               "IDX files; or use TFDS 'fashion_mnist' (pass a TFDS data directory, and allow the download to "
               "fetch it).")


_RESIZE_CHUNK = 256          # images per product: the intermediates stay in cache
_PRECISION_BITS = 22         # PIL's fractional bits of its 8-bit resampling weights


class LabelledImages(NamedTuple):
  images: np.ndarray  # uint8 [N, 32, 32, 1], 0..255 (see `to_unit_interval`)
  labels: np.ndarray  # int32 [N] in 0..9, names in CLASSES


def resize(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
  """Resizes uint8 [N, H, W] images to [N, size, size] exactly as PIL's bilinear filter does, as the authors did.

  torchvision's `transforms.Resize(32)` on a PIL image calls `PIL.Image.resize((32, 32), BILINEAR)`. PIL resizes
  rows, then columns, each pass a weighted sum of at most 3 input pixels per output pixel with integer weights
  (`_pil_bilinear_weights`, 22 fractional bits), rounded and clipped to uint8 in between. Here each pass is one
  matrix product of the images with the [out, in] weight matrix, in float64: every product and partial sum is
  an integer below 2³¹, so the sums are exact in any order and the bytes are PIL's (tests compare with PIL on
  the real files and random images). 0.43 s for the 60,000 training images, against 1.1 s calling PIL per image.

  References:
      Mathieu et al. (2019), released code (`transforms.Resize(32)` for Fashion-MNIST); docs/science.md §5;
      Pillow, `libImaging/Resample.c` (the algorithm, described in `_pil_bilinear_weights`).
  """
  n, h, w = images.shape
  rows, cols = _pil_bilinear_weights(h, size), _pil_bilinear_weights(w, size)
  out = np.empty((n, size, size), np.uint8)
  for i in range(0, n, _RESIZE_CHUNK):
    x = images[i:i + _RESIZE_CHUNK].astype(np.float64)
    m = x.shape[0]
    wide = _round_to_uint8(x.reshape(-1, w) @ cols.T).reshape(m, h, size)            # rows resized: [m, h, size]
    tall = _round_to_uint8(rows @ wide.transpose(1, 0, 2).reshape(h, m * size))       # columns: [size, m * size]
    out[i:i + m] = tall.reshape(size, m, size).transpose(1, 0, 2)
  return out


def _pil_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
  """PIL's integer bilinear weights (as float64) for resampling `in_size` pixels to `out_size`: [out, in].

  Output pixel i is centred at c = (i + ½)·s, s = in/out, in input coordinates; with f = max(s, 1) (the
  filter widens when shrinking), it reads inputs j in [trunc(c − f + ½), trunc(c + f + ½)) (clamped to the
  image), weighted by the triangle filter max(0, 1 − |(j − c + ½)/f|), normalised to sum 1, then scaled by
  2²² and rounded half up (C's cast of w·2²² + ½; the weights are never negative). The arithmetic is PIL's,
  operation for operation.
  """
  scale = in_size / out_size
  filter_scale = max(scale, 1.0)
  centre = (np.arange(out_size) + 0.5) * scale
  first = np.maximum((centre - filter_scale + 0.5).astype(np.int64), 0)
  count = np.minimum((centre + filter_scale + 0.5).astype(np.int64), in_size) - first
  taps = np.arange(int(np.ceil(filter_scale)) * 2 + 1)
  used = taps[None, :] < count[:, None]
  weight = np.maximum(1.0 - np.abs(((taps[None, :] + first[:, None]) - centre[:, None] + 0.5) * (1.0 / filter_scale)),
                      0.0)
  weight = np.where(used, weight, 0.0)
  total = weight[:, 0].copy()
  for t in taps[1:]:                      # summed in tap order, as PIL does
    total += weight[:, t]                 # > 0: the nearest input is within ½ of the centre
  weight = np.trunc(weight / total[:, None] * (1 << _PRECISION_BITS) + 0.5)
  dense = np.zeros((out_size, in_size))
  out_index, tap = np.nonzero(used)
  dense[out_index, first[out_index] + tap] = weight[out_index, tap]
  return dense


def _round_to_uint8(acc: np.ndarray) -> np.ndarray:
  """PIL's clip8: (acc + 2²¹) >> 22 clipped to 0..255, in place on float64 integers (exact)."""
  acc += 1 << (_PRECISION_BITS - 1)
  acc *= 1.0 / (1 << _PRECISION_BITS)
  np.floor(acc, out=acc)
  return np.clip(acc, 0, 255, out=acc)


def to_unit_interval(images_u8):
  """float32 images in [EPS, 1 - EPS]: x = clip(u8 / 255, 1e-6, 1 - 1e-6) (numpy or jax input).

  The Laplace likelihood of the Fashion-MNIST decoder is fitted to values inside (0, 1).

  References:
      Mathieu et al. (2019), released code (data clamped to [eta, 1 - eta]); docs/science.md §3.
  """
  xp = np if isinstance(images_u8, np.ndarray) else jnp
  return xp.clip(images_u8.astype(xp.float32) / 255.0, EPS, 1.0 - EPS)


def _find_idx(directory: pathlib.Path, stem: str) -> pathlib.Path:
  for name in (stem, stem + ".gz"):
    if (directory / name).is_file():
      return directory / name
  problem = "does not exist" if not directory.exists() else (
      "is not a directory" if not directory.is_dir() else f"has no {stem}[.gz]")
  raise DataError(f"Fashion-MNIST IDX files not found: {directory} {problem}. {_HOW_TO_GET}")


def _read(path: pathlib.Path) -> np.ndarray:
  try:
    return idx_file.read_idx(path)
  except DataError as e:
    raise DataError(f"Fashion-MNIST: {e} The IDX files come from `apt-get install --reinstall "
                    "dataset-fashion-mnist` or github.com/zalandoresearch/fashion-mnist.") from e


def load_idx_dir(directory, split: str = "train") -> LabelledImages:
  """Loads a Fashion-MNIST split from the IDX files in `directory`, resized to 32×32.

  Args:
      directory: holds `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
      split: "train" (60,000 images) or "test" (10,000).

  Returns:
      `LabelledImages` (uint8 images [N, 32, 32, 1], int32 labels [N]).

  Raises:
      DataError: a file is missing, truncated or corrupt, or holds other shapes or values than Fashion-MNIST.

  References:
      Xiao et al. (2017), Fashion-MNIST, github.com/zalandoresearch/fashion-mnist.
  """
  directory = pathlib.Path(directory).expanduser()
  prefix = SPLITS[split]
  images_path = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
  labels_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
  images, labels = _read(images_path), _read(labels_path)
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
    raise DataError(f"Fashion-MNIST file {images_path} holds {images.dtype} {images.shape}; the images must be "
                    f"uint8 [N, 28, 28]. Replace it with the original file. {_HOW_TO_GET}")
  if labels.shape != images.shape[:1] or labels.dtype != np.uint8 or labels.max(initial=0) >= len(CLASSES):
    raise DataError(f"Fashion-MNIST file {labels_path} holds {labels.dtype} {labels.shape} with values up to "
                    f"{labels.max(initial=0)}; the labels must be uint8 [{len(images)}] (one per image in "
                    f"{images_path.name}) in 0..9. Replace it with the original file. {_HOW_TO_GET}")
  return LabelledImages(resize(images)[..., None], labels.astype(np.int32))


def load_tfds(split: str = "train", data_dir=None, *, download: bool = False) -> LabelledImages:
  """Loads TFDS `fashion_mnist` (random access, no TensorFlow), resized to 32×32.

  Raises:
      DataError: the dataset is not prepared in `data_dir` (and `download` is false) or is malformed.

  References:
      TFDS catalogue `fashion_mnist`; Xiao et al. (2017).
  """
  images, labels = tfds_source.read_fashion_mnist(split, data_dir, download=download)
  return LabelledImages(resize(images)[..., None], labels)


def load_fashion_mnist(split: str = "train", *, source: str = "auto", data_dir=None, tfds_data_dir=None,
                       download: bool = False) -> LabelledImages:
  """Loads a Fashion-MNIST split (60,000 train / 10,000 test) resized to 32×32; logs the source used.

  source="auto" reads the IDX files in `data_dir` if given, else in Debian's directory
  /usr/share/datasets/fashion-mnist if it exists, else TFDS `fashion_mnist` from `tfds_data_dir`. Nothing is
  downloaded unless `download` is true (TFDS only, into `tfds_data_dir`).

  Args:
      split: "train" or "test".
      source: "auto", "idx" or "tfds".
      data_dir: a directory with the IDX files (default: Debian's).
      tfds_data_dir: the TFDS data directory.
      download: allow TFDS to download and prepare `fashion_mnist` into `tfds_data_dir`.

  Returns:
      `LabelledImages`: uint8 images [N, 32, 32, 1] (convert with `to_unit_interval`), int32 labels [N].

  Raises:
      DataError: no data where asked (the message says how to get them), or a file is truncated or corrupt.

  References:
      Xiao et al. (2017), Fashion-MNIST; docs/science.md §5 and §7.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {tuple(SPLITS)}; got {split!r}")
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
  idx_dir = pathlib.Path(data_dir or DEBIAN_DIR).expanduser()
  if source == "idx" or (source == "auto" and (data_dir is not None or idx_dir.is_dir())):
    data = load_idx_dir(idx_dir, split)
    logging.info("Fashion-MNIST source: IDX files in %s (%s, %d images)", idx_dir, split, len(data.labels))
    return data
  if source == "auto" and not download and not tfds_source.is_prepared("fashion_mnist", tfds_data_dir):
    where = "no TFDS data directory was given" if tfds_data_dir is None else (
        f"TFDS 'fashion_mnist' is not prepared in {tfds_data_dir}")
    raise DataError(f"No Fashion-MNIST found: no IDX directory was given, {DEBIAN_DIR} does not exist, and "
                    f"{where}. {_HOW_TO_GET}")
  data = load_tfds(split, tfds_data_dir, download=download)
  logging.info("Fashion-MNIST source: TFDS 'fashion_mnist' from %s (%s, %d images)", tfds_data_dir, split,
               len(data.labels))
  return data
