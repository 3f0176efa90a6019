"""Fashion-MNIST: the IDX files (Debian's dataset-fashion-mnist or any directory) or TFDS, resized to 32×32."""

from __future__ import annotations

import gzip
import pathlib
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

from decompvae.data import dsprites

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # installed by `apt-get install dataset-fashion-mnist`
SPLITS = {"train": "train", "test": "t10k"}  # split -> IDX file prefix
IMAGE_SIZE = 32
EPS = 1e-6  # pixel values are clamped to [EPS, 1 - EPS]
SOURCES = ("auto", "idx", "tfds")

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class LabelledImages(NamedTuple):
  images: np.ndarray  # uint8 [N, 32, 32, 1], 0..255 (see `to_unit_interval`)
  labels: np.ndarray  # int32 [N] in 0..9, names in CLASSES


def read_idx(path) -> np.ndarray:
  """Reads an IDX file (gzip-compressed or not, told apart by its first bytes).

  Format: 2 zero bytes, a type code, the number of dimensions d, d big-endian uint32 sizes, then the data in
  row-major order, big-endian.

  Args:
      path: the file.

  Returns:
      The array, in native byte order.

  References:
      LeCun et al., "The MNIST database" (yann.lecun.com/exdb/mnist), "THE IDX FILE FORMAT".
  """
  raw = pathlib.Path(path).read_bytes()
  if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file (magic bytes {raw[:4].hex()})")
  ndim = raw[3]
  shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  offset = 4 + 4 * ndim
  if len(raw) - offset != int(np.prod(shape)) * dtype.itemsize:
    raise ValueError(f"{path}: header says {dtype} {shape} ({int(np.prod(shape)) * dtype.itemsize} bytes of "
                     f"data), the file holds {len(raw) - offset}")
  return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def resize(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
  """Resizes uint8 [N, H, W] images to [N, size, size] with PIL's bilinear filter, as the authors did.

  torchvision's `transforms.Resize(32)` on a PIL image calls `PIL.Image.resize((32, 32), BILINEAR)`: for
  enlarging, plain bilinear interpolation between pixel centres (half-pixel convention, edges clamped),
  rounded to uint8. Using PIL itself reproduces those bytes exactly.

  References:
      Mathieu et al. (2019), released code (`transforms.Resize(32)` for Fashion-MNIST); SPEC §5.
  """
  return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
                   for im in images])


def to_unit_interval(images_u8):
  """float32 images in [EPS, 1 - EPS]: x = clip(u8 / 255, 1e-6, 1 - 1e-6) (numpy or jax input).

  The Laplace likelihood of the Fashion-MNIST decoder is fitted to values inside (0, 1).

  References:
      Mathieu et al. (2019), released code (data clamped to [eta, 1 - eta]); SPEC §3.
  """
  xp = np if isinstance(images_u8, np.ndarray) else jnp
  return xp.clip(images_u8.astype(xp.float32) / 255.0, EPS, 1.0 - EPS)


def _find_idx(directory: pathlib.Path, stem: str) -> pathlib.Path:
  for name in (stem, stem + ".gz"):
    if (directory / name).is_file():
      return directory / name
  raise FileNotFoundError(f"{directory} has no {stem}[.gz]")


def load_idx_dir(directory, split: str = "train") -> LabelledImages:
  """Loads a Fashion-MNIST split from the IDX files in `directory`, resized to 32×32.

  Args:
      directory: holds `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
      split: "train" (60,000 images) or "test" (10,000).

  Returns:
      `LabelledImages` (uint8 images [N, 32, 32, 1], int32 labels [N]).

  References:
      Xiao et al. (2017), Fashion-MNIST, github.com/zalandoresearch/fashion-mnist.
  """
  directory = pathlib.Path(directory).expanduser()
  prefix = SPLITS[split]
  images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"))
  labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte"))
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
    raise ValueError(f"{directory}: {prefix} images must be uint8 [N, 28, 28]; got {images.dtype} "
                     f"{images.shape}")
  if labels.shape != images.shape[:1] or labels.dtype != np.uint8 or labels.max(initial=0) >= len(CLASSES):
    raise ValueError(f"{directory}: {prefix} labels must be uint8 [{len(images)}] in 0..9; got {labels.dtype} "
                     f"{labels.shape}")
  return LabelledImages(resize(images)[..., None], labels.astype(np.int32))


def load_tfds(split: str = "train", data_dir=None, *, download: bool = False) -> LabelledImages:
  """Loads TFDS `fashion_mnist` (random access, no TensorFlow), resized to 32×32.

  References:
      TFDS catalogue `fashion_mnist`; Xiao et al. (2017).
  """
  source = dsprites.open_tfds("fashion_mnist", split, data_dir, download, "tfds_data_dir=DIR")
  records = [source[i] for i in range(len(source))]
  images = np.stack([r["image"][..., 0] for r in records]).astype(np.uint8)
  labels = np.array([r["label"] for r in records], np.int32)
  return LabelledImages(resize(images)[..., None], labels)


def load_fashion_mnist(split: str = "train", *, source: str = "auto", data_dir=None, tfds_data_dir=None,
                       download: bool = False) -> LabelledImages:
  """Loads a Fashion-MNIST split (60,000 train / 10,000 test) resized to 32×32; logs the source used.

  source="auto" reads the IDX files in `data_dir` if given, else in Debian's directory
  /usr/share/datasets/fashion-mnist if it exists, else TFDS `fashion_mnist` from `tfds_data_dir`. Nothing is
  downloaded unless `download` is true (TFDS only).

  Args:
      split: "train" or "test".
      source: "auto", "idx" or "tfds".
      data_dir: a directory with the IDX files (default: Debian's).
      tfds_data_dir: the TFDS data directory.
      download: allow TFDS to download and prepare `fashion_mnist`.

  Returns:
      `LabelledImages`: uint8 images [N, 32, 32, 1] (convert with `to_unit_interval`), int32 labels [N].

  References:
      Xiao et al. (2017), Fashion-MNIST; SPEC §5 and §7.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {tuple(SPLITS)}; got {split!r}")
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
  idx_dir = pathlib.Path(data_dir or DEBIAN_DIR).expanduser()
  if source == "idx" or (source == "auto" and (data_dir is not None or idx_dir.is_dir())):
    try:
      data = load_idx_dir(idx_dir, split)
    except FileNotFoundError as e:
      raise FileNotFoundError(
          f"Fashion-MNIST IDX files not found ({e}). Install them with `apt-get install dataset-fashion-mnist` "
          f"(into {DEBIAN_DIR}), or pass a directory holding them (data_dir=...), or use TFDS "
          "'fashion_mnist' (source='tfds', tfds_data_dir=..., download=True to fetch it).") from e
    logging.info("Fashion-MNIST source: IDX files in %s (%s, %d images)", idx_dir, split, len(data.labels))
    return data
  try:
    data = load_tfds(split, tfds_data_dir, download=download)
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f"No Fashion-MNIST found: no IDX directory (install `apt-get install dataset-fashion-mnist`, or pass "
        f"data_dir=...) and {e}") from e
  logging.info("Fashion-MNIST source: TFDS 'fashion_mnist' from %s (%s, %d images)", tfds_data_dir, split,
               len(data.labels))
  return data
