"""Bit-packed 64×64 binary images: one image is 512 bytes of np.packbits (bit order "big")."""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 64
PACKED_BYTES = IMAGE_SIZE * IMAGE_SIZE // 8  # 512


def pack(images: np.ndarray) -> np.ndarray:
  """uint8 [..., 512] bit-packed rows from binary images [..., 64, 64] (any dtype, values in {0, 1})."""
  images = np.asarray(images)
  return np.packbits(images.reshape(*images.shape[:-2], IMAGE_SIZE * IMAGE_SIZE), axis=-1)


def unpack(packed: np.ndarray) -> np.ndarray:
  """uint8 [..., 64, 64] in {0, 1} from bit-packed rows [..., 512] (np.packbits, bit order "big").

  dSprites is stored packed (377 MB for 737,280 images instead of 11 GiB as float32) and unpacked per batch.

  References:
      docs/science.md §7 (Data).
  """
  return np.unpackbits(packed, axis=-1).reshape(*packed.shape[:-1], IMAGE_SIZE, IMAGE_SIZE)
