"""Fashion-MNIST: the IDX files (Debian's dataset-fashion-mnist or any directory) or TFDS, resized to 32×32."""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

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


class LabelledImages(NamedTuple):
  images: np.ndarray  # uint8 [N, 32, 32, 1], 0..255 (see `to_unit_interval`)
  labels: np.ndarray  # int32 [N] in 0..9, names in CLASSES


def resize(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
  """Resizes uint8 [N, H, W] images to [N, size, size] with PIL's bilinear filter, as the authors did.

  torchvision's `transforms.Resize(32)` on a PIL image calls `PIL.Image.resize((32, 32), BILINEAR)`: for
  enlarging, plain bilinear interpolation between pixel centres (half-pixel convention, edges clamped),
  rounded to uint8. Using PIL itself reproduces those bytes exactly.

  References:
      Mathieu et al. (2019), released code (`transforms.Resize(32)` for Fashion-MNIST); docs/science.md §5.
  """
  return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
                   for im in images])


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
