"""The offline dSprites renderer: binary 64×64 sprites for any shape, scale, orientation and position."""

from __future__ import annotations

import concurrent.futures
import math
import os

import numpy as np

from decompvae.data.packing import IMAGE_SIZE
from decompvae.data.packing import PACKED_BYTES

SHAPES = ("square", "ellipse", "heart")

# Geometry at scale 1, in pixels (docs/science.md §7, measured from the published frames). Pixel (row r,
# column c) covers [c, c+1] x [r, r+1]; the renderer samples pixel centres. Sprite centre = 16 + 32 * pos in
# both axes.
_SQUARE_HALF_SIDE = 10.0  # side 20 px
_ELLIPSE_SEMI_AXES = (13.0, 7.0)  # 26 x 14 px, long axis horizontal at orientation 0
_HEART_SIZE = (20.0, 17.0)  # width x height, lobes up at orientation 0
# The heart is the region (x^2 + y^2 - 1)^3 <= x^2 y^3: x in [-1.1390, 1.1390], y in [-1, 1.2365], area
# centroid at y = 0.2935 (measured on a fine grid). It is stretched to _HEART_SIZE and centred on its centroid,
# so that the centroid is the sprite's position and its rotation centre.
_HEART_HALF_WIDTH, _HEART_Y_RANGE, _HEART_CENTROID_Y = 1.1390, (-1.0, 1.2365), 0.2935
# Radius (px, scale 1) of a disc around the centre that holds each shape whatever its rotation, plus a margin.
_RADIUS = {"square": 10.0 * math.sqrt(2.0) + 0.5, "ellipse": 13.5, "heart": 10.8}
# Bump when the rendered pixels change: the cache file name holds it, so an old cache is not reused.
RENDER_VERSION = 1


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
      uint8 [n, 512]: np.packbits of each 64×64 image (see `packing.unpack`).

  References:
      Matthey et al. (2017), dSprites; docs/science.md §7 for the measured geometry.
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
