"""TFDS datasets read by random access (`tfds.data_source`: array_record files, no TensorFlow needed)."""

from __future__ import annotations

import math
import operator

import numpy as np
from absl import logging

from decompvae.data import packing
from decompvae.data.errors import DataError

DSPRITES_LABELS = ("label_shape", "label_scale", "label_orientation", "label_x_position", "label_y_position")


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, optional source)
  return tfds


def _how(name: str) -> str:
  return (f"Prepare it with `tfds build {name} --file_format=array_record --data_dir=DIR` (needs network) and "
          "pass that directory, or pass a directory and allow the download.")


def is_prepared(name: str, data_dir) -> bool:
  """Whether TFDS dataset `name` is prepared in `data_dir` (False when `data_dir` is None)."""
  return data_dir is not None and _tfds().builder(name, data_dir=data_dir).is_prepared()


def open_source(name: str, split: str, data_dir, *, download: bool = False):
  """`tfds.data_source(name, split)` from `data_dir`, downloading only if `download` is true.

  `tfds.data_source` reads the array_record file format without TensorFlow (records are parsed with TFDS's
  bundled protos, images decoded with PIL). The directory is always explicit: with `download` TFDS writes
  there, never to its default ~/tensorflow_datasets.

  Args:
      name: the TFDS dataset name.
      split: the split, e.g. "train".
      data_dir: the TFDS data directory.
      download: allow TFDS to download and prepare the dataset into `data_dir` (network).

  Returns:
      The random-access data source (`len`, `source[i]`, `source.__getitems__(keys)`).

  Raises:
      DataError: `data_dir` is None, or the dataset is not prepared there (and `download` is false), or it is
          prepared without array_record files.

  References:
      TFDS `tfds.data_source` documentation.
  """
  if data_dir is None:
    raise DataError(f"TFDS '{name}' needs a data directory (none was given). {_how(name)}")
  if not download and not is_prepared(name, data_dir):
    raise DataError(f"TFDS '{name}' is not prepared in {data_dir}. {_how(name)}")
  if download:
    logging.info("TFDS: downloading and preparing '%s' into %s if it is not there yet", name, data_dir)
  try:
    return _tfds().data_source(name, split=split, data_dir=data_dir, download=download)
  except NotImplementedError as e:  # prepared as TFRecord only: no random access
    raise DataError(f"TFDS '{name}' in {data_dir} has no array_record files ({e}). {_how(name)}") from e


def read_dsprites(data_dir, factor_sizes: tuple[int, ...], *, download: bool = False,
                  chunk: int = 8192) -> np.ndarray:
  """TFDS `dsprites` (split 'train') in row-major factor order, bit-packed.

  TFDS stores the examples in a shuffled order; each example is put back at the row-major index of its
  `label_*` classes, and the split must hold every factor combination exactly once.

  Args:
      data_dir: the TFDS data directory.
      factor_sizes: the class counts of (shape, scale, orientation, x, y), giving the row-major order.
      download: allow TFDS to download and prepare the dataset (network, ~30 MB).
      chunk: examples read per request.

  Returns:
      uint8 [N, 512]: image i is that of the factor classes np.unravel_index(i, factor_sizes).

  Raises:
      DataError: as `open_source`, or the split does not hold each factor combination once as a binary
          64×64 image.

  References:
      TFDS catalogue `dsprites`; Matthey et al. (2017).
  """
  source = open_source("dsprites", "train", data_dir, download=download)
  num_examples, size = math.prod(factor_sizes), packing.IMAGE_SIZE
  fix = f"Delete the dataset from {data_dir} and prepare it again."
  if len(source) != num_examples:
    raise DataError(f"TFDS dsprites in {data_dir} has {len(source)} examples; expected {num_examples}. {fix}")
  packed = np.zeros((num_examples, packing.PACKED_BYTES), np.uint8)
  seen = np.zeros(num_examples, bool)
  for start in range(0, num_examples, chunk):
    records = source.__getitems__(range(start, min(start + chunk, num_examples)))
    images = np.stack([r["image"] for r in records])
    if images.shape[1:] != (size, size, 1) or images.max(initial=0) > 1:
      raise DataError(f"TFDS dsprites in {data_dir} holds images of shape {images.shape[1:]} with values up to "
                      f"{images.max()}; they must be 0/1 of shape ({size}, {size}, 1). {fix}")
    labels = np.array(list(map(operator.itemgetter(*DSPRITES_LABELS), records)))
    if np.any(labels < 0) or np.any(labels >= np.asarray(factor_sizes)):
      raise DataError(f"TFDS dsprites in {data_dir} holds labels outside the factor sizes {factor_sizes}. {fix}")
    index = np.ravel_multi_index(tuple(labels.T), factor_sizes)
    packed[index] = packing.pack(images[..., 0])
    seen[index] = True
  if not seen.all():
    raise DataError(f"TFDS dsprites in {data_dir} misses {np.sum(~seen)} factor combinations (it holds "
                    f"duplicates instead). {fix}")
  return packed


def read_fashion_mnist(split: str, data_dir, *, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """TFDS `fashion_mnist` split `split`: (uint8 images [N, 28, 28], int32 labels [N] in 0..9), TFDS's order.

  Raises:
      DataError: as `open_source`, or the records are not 28×28 grey images with labels in 0..9.

  References:
      TFDS catalogue `fashion_mnist`; Xiao et al. (2017).
  """
  source = open_source("fashion_mnist", split, data_dir, download=download)
  records = [source[i] for i in range(len(source))]
  images = np.stack([r["image"] for r in records]) if records else np.zeros((0, 28, 28, 1), np.uint8)
  labels = np.array([r["label"] for r in records], np.int64)
  if images.shape[1:] != (28, 28, 1) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
    raise DataError(f"TFDS fashion_mnist in {data_dir} holds images of shape {images.shape[1:]} and labels in "
                    f"{labels.min(initial=0)}..{labels.max(initial=0)}; expected (28, 28, 1) and 0..9. Delete "
                    f"the dataset from {data_dir} and prepare it again.")
  return images[..., 0].astype(np.uint8), labels.astype(np.int32)
