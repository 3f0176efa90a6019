"""Tests of the dSprites factor grid, dataset interface, renderer, and real-file and TFDS loaders."""

import hashlib
import logging
import math

import numpy as np
import pytest
import tensorflow_datasets as tfds

from decompvae.data import DataError
from decompvae.data import dsprites
from decompvae.data import packing
from decompvae.data import render

SIZES = (3, 6, 40, 32, 32)
N = 737_280


def _classes(shape, scale, orientation, pos_x, pos_y):
  """Rows of factor classes for the product of the given class lists, in row-major order."""
  grids = np.meshgrid(*(np.atleast_1d(c) for c in (shape, scale, orientation, pos_x, pos_y)), indexing="ij")
  return np.stack([g.ravel() for g in grids], 1)


def _images(classes):
  return packing.unpack(dsprites.render_dsprites(classes))


def _centroid(image):
  """(x right, y down) of the on pixels' centres, in pixels."""
  rows, cols = np.nonzero(image)
  return cols.mean() + 0.5, rows.mean() + 0.5


# ---------------------------------------------------------------- the factor grid and the interface


def test_factor_grid_order_and_values():
  data = dsprites.DSprites(np.zeros((N, 512), np.uint8))
  assert data.num_examples == N and data.factor_sizes == SIZES
  assert data.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
  rng = np.random.default_rng(0)
  idx = np.concatenate([[0, 1, 31, 32, 1023, 1024, N - 1], rng.integers(0, N, 200)])
  classes = data.factor_classes[idx]
  s, sc, o, x, y = classes.T
  np.testing.assert_array_equal(s * 245760 + sc * 40960 + o * 1024 + x * 32 + y, idx)
  np.testing.assert_array_equal(classes[6], [2, 5, 39, 31, 31])
  expected = np.stack([s + 1.0, 0.5 + sc * 0.1, o * 2 * np.pi / 39, x / 31, y / 31], 1)
  np.testing.assert_allclose(data.factor_values[idx], expected, atol=1e-12)
  np.testing.assert_array_equal(data.index(classes), idx)


def test_interface_sampling():
  packed = np.zeros((N, 512), np.uint8)
  data = dsprites.DSprites(packed)
  rng = np.random.default_rng(2)
  factors = data.sample_factors(5000, rng)
  assert factors.shape == (5000, 5)
  np.testing.assert_array_equal(factors.min(0), 0)
  np.testing.assert_array_equal(factors.max(0), np.array(SIZES) - 1)
  idx = factors[:7] @ np.array([245760, 40960, 1024, 32, 1])
  packed[idx] = rng.integers(0, 256, (7, 512), dtype=np.uint8)
  obs = data.sample_observations_from_factors(factors[:7], rng)
  assert obs.dtype == np.float32 and obs.shape == (7, 64, 64, 1)
  np.testing.assert_array_equal(obs[..., 0], np.unpackbits(packed[idx], axis=1).reshape(7, 64, 64))


def test_interface_refuses_wrong_storage():
  with pytest.raises(ValueError, match="uint8"):
    dsprites.DSprites(np.zeros((N, 4096), np.uint8))


# ---------------------------------------------------------------- the renderer


def test_subset_rendering_is_order_independent_and_binary():
  classes = _classes([0, 1, 2], [0, 5], [0, 7], [0, 13, 31], [2, 30])
  packed = dsprites.render_dsprites(classes)
  assert packed.shape == (len(classes), 512) and packed.dtype == np.uint8
  images = packing.unpack(packed)
  assert set(np.unique(images)) == {0, 1}
  assert images.reshape(len(images), -1).sum(1).min() > 40  # every sprite is visible
  perm = np.random.default_rng(0).permutation(len(classes))[:17]
  np.testing.assert_array_equal(dsprites.render_dsprites(classes[perm]), packed[perm])


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_centroid_tracks_position(shape):
  pos = np.arange(32)
  along_x = _images(_classes(shape, 5, 0, pos, 9))
  along_y = _images(_classes(shape, 5, 0, 20, pos))
  cx = np.array([_centroid(im)[0] for im in along_x])
  cy = np.array([_centroid(im)[1] for im in along_y])
  np.testing.assert_allclose(cx, 16 + 32 * pos / 31, atol=0.5)  # posX = 0 on the left
  np.testing.assert_allclose(cy, 16 + 32 * pos / 31, atol=0.5)  # posY grows down the rows
  np.testing.assert_allclose(_centroid(along_x[0])[1], 16 + 32 * 9 / 31, atol=0.5)


def test_sizes_at_scale_one():
  """Bounding boxes at orientation 0, scale 1: square 20×20, ellipse 26×14, heart 20×17 (science.md §7)."""
  images = _images(_classes([0, 1, 2], 5, 0, 15, 15))
  for image, (width, height) in zip(images, [(20, 20), (26, 14), (20, 17)]):
    rows, cols = np.nonzero(image)
    assert abs(cols.max() - cols.min() + 1 - width) <= 1
    assert abs(rows.max() - rows.min() + 1 - height) <= 1


def test_heart_lobes_up():
  rows, cols = np.nonzero(_images(_classes(2, 5, 0, 15, 15))[0])
  widths = np.array([np.ptp(cols[rows == r]) + 1 for r in np.unique(rows)])
  # The widest row is in the upper half, the lowest row is the narrow tip.
  assert np.argmax(widths) < len(widths) / 2 and widths[-1] <= 3


def test_area_grows_with_scale_squared():
  """Mean on-pixel count over all 1,024 positions (equidistributed sub-pixel phases) = the shape's area."""
  pos = np.arange(32)
  for orientation in (0, 5):
    areas = np.array([_images(_classes(0, scale, orientation, pos, pos)).sum((1, 2)).mean()
                      for scale in (0, 5)])
    np.testing.assert_allclose(areas, [100.0, 400.0], rtol=0.02)
  ellipse = _images(_classes(1, 5, 3, pos, pos)).sum((1, 2)).mean()
  np.testing.assert_allclose(ellipse, math.pi * 13 * 7, rtol=0.02)


def test_heart_principal_axis_turns_with_orientation():
  orientations = np.arange(0, 40, 3)
  images = _images(_classes(2, 5, orientations, 15, 16))
  angles = []
  for image in images:
    rows, cols = np.nonzero(image)
    points = np.stack([cols, -rows], 1).astype(float)  # y up
    evals, evecs = np.linalg.eigh(np.cov(points.T))
    major = evecs[:, np.argmax(evals)]
    angles.append(np.arctan2(major[1], major[0]))
  turned = np.asarray(angles) - angles[0]
  expected = 2 * np.pi * orientations / 39  # counter-clockwise on screen
  error = (turned - expected + np.pi / 2) % np.pi - np.pi / 2  # an axis is defined modulo π
  np.testing.assert_allclose(error, 0.0, atol=np.deg2rad(4))


def test_rotation_periods():
  theta = np.array([0.1, 0.7, 1.3, 2.9])
  n = len(theta)

  def draw(shape, angles):
    return packing.unpack(render.render_sprites(np.full(n, shape), 1.0, angles, 0.4, 0.6)).astype(int)

  def differing(a, b):
    return np.abs(a - b).sum((1, 2))

  square, ellipse, heart = (draw(s, theta) for s in range(3))
  assert differing(square, draw(0, theta + np.pi / 2)).max() <= 2
  assert differing(ellipse, draw(1, theta + np.pi)).max() <= 2
  assert differing(ellipse, draw(1, theta + np.pi / 2)).min() > 50
  assert differing(heart, draw(2, theta + np.pi)).min() > 50
  assert differing(heart, draw(2, theta + np.pi / 2)).min() > 50
  # Orientation classes 0 and 39 are the same rotation (both ends of linspace(0, 2π, 40)).
  ends = _images(_classes([0, 1, 2], 3, [0, 39], 10, 20))
  assert np.abs(ends[0::2].astype(int) - ends[1::2]).sum() <= 2


def test_rendered_pixels_are_pinned():
  """The exact bytes of a coarse sub-grid (11,520 images, every shape and scale): caches and results depend on
  them. If the renderer is changed on purpose, bump `render.RENDER_VERSION` (the cache name) and this hash."""
  strides = (1, 1, 4, 4, 4)
  sizes = tuple(s // k for s, k in zip(SIZES, strides))
  classes = np.stack(np.unravel_index(np.arange(math.prod(sizes)), sizes), 1) * np.asarray(strides)
  digest = hashlib.sha256(dsprites.render_dsprites(classes).tobytes()).hexdigest()
  assert render.RENDER_VERSION == 1
  assert digest == "90034f380ea32e3af80443476aff91c5d373f22d9e8143dcb722298963d497ef"


@pytest.mark.slow
def test_full_render_count_and_order():
  packed = dsprites.render_dsprites()
  assert packed.shape == (N, 512) and packed.dtype == np.uint8
  idx = np.random.default_rng(3).integers(0, N, 64)
  classes = np.stack(np.unravel_index(idx, SIZES), 1)
  np.testing.assert_array_equal(dsprites.render_dsprites(classes), packed[idx])


# ---------------------------------------------------------------- the real file


SMALL = (1, 3, 2, 3, 2, 2)  # a sub-grid in the real format


def _write_npz(path, **overrides):
  n = math.prod(SMALL)
  classes = np.stack(np.unravel_index(np.arange(n), SMALL), 1).astype(np.int64)
  tables = [np.array([1.0]), np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0]), np.array([0.0, 0.1, 0.2]),
            np.array([0.0, 1.0]), np.array([0.0, 1.0])]
  values = np.stack([t[c] for t, c in zip(tables, classes.T)], 1)
  imgs = np.random.default_rng(0).integers(0, 2, (n, 64, 64)).astype(np.uint8)
  metadata = {"latents_sizes": np.array(SMALL), "version": 1,
              "latents_names": ("color", "shape", "scale", "orientation", "posX", "posY")}
  arrays = dict(imgs=imgs, latents_classes=classes, latents_values=values, metadata=metadata)
  arrays.update(overrides)
  np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
  return imgs, values


def test_npz_loader(tmp_path, caplog):
  path = tmp_path / "d.npz"
  imgs, values = _write_npz(path)
  with caplog.at_level(logging.INFO):
    data = dsprites.load_dsprites(path=path)
  assert "real file" in caplog.text
  assert data.source == "npz" and data.factor_sizes == SMALL[1:]
  np.testing.assert_array_equal(data.images(np.arange(len(imgs)))[..., 0], imgs)
  np.testing.assert_array_equal(data.factor_values, values[:, 1:])


@pytest.mark.parametrize("override, message", [
    (dict(latents_values=None), r"missing the arrays \['latents_values'\]"),
    (dict(imgs=np.zeros((72, 64, 64), np.float32)), "uint8"),
    (dict(imgs=np.zeros((72, 32, 32), np.uint8)), r"\(72, 64, 64\)"),
    (dict(imgs=np.full((72, 64, 64), 255, np.uint8)), "values up to 255"),
    (dict(latents_classes=np.zeros((72, 6), np.int64)), "row-major"),
    (dict(latents_values=np.zeros((72, 5))), r"\[72, 6\]"),
])
def test_npz_loader_refuses_bad_files(tmp_path, override, message):
  path = tmp_path / "bad.npz"
  _write_npz(path, **override)
  with pytest.raises(DataError, match=message) as error:
    dsprites.load_npz(path)
  assert str(path) in str(error.value) and dsprites.NPZ_URL in str(error.value)


def test_npz_missing_says_where_to_get_it(tmp_path):
  with pytest.raises(DataError, match="dsprites-dataset") as error:
    dsprites.load_dsprites(source="npz", path=tmp_path / "nope.npz")
  assert f"{tmp_path / 'nope.npz'} not found" in str(error.value)


# ---------------------------------------------------------------- TFDS


def test_tfds_not_prepared_is_an_error_with_instructions(tmp_path):
  with pytest.raises(DataError, match="tfds build dsprites") as error:
    dsprites.load_dsprites(source="tfds", data_dir=tmp_path)
  assert f"not prepared in {tmp_path}" in str(error.value)


def test_auto_falls_back_to_the_renderer(tmp_path, monkeypatch):
  monkeypatch.setattr(dsprites, "_rendered", lambda cache_dir: ("rendered", cache_dir))
  assert dsprites.load_dsprites(data_dir=tmp_path, cache_dir="c") == ("rendered", "c")
  assert dsprites.load_dsprites() == ("rendered", None)


def test_tfds_under_mock_data_checks_completeness(tmp_path):
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(DataError, match="5 examples; expected 737280"):
      dsprites.load_dsprites(source="tfds", data_dir=tmp_path, download=True)


class _ShuffledDSprites:
  """A stand-in for the TFDS data source: every factor combination once, in a shuffled order, as TFDS does."""

  def __init__(self, marked):
    self.order = np.random.default_rng(0).permutation(N)  # record k holds row-major example order[k]
    self.labels = np.stack(np.unravel_index(self.order, SIZES), 1)
    self.marked = marked  # row-major index -> image
    self.blank = np.zeros((64, 64, 1), np.uint8)

  def __len__(self):
    return N

  def __getitems__(self, keys):
    return [{"image": self.marked.get(self.order[k], self.blank), "label_shape": s, "label_scale": sc,
             "label_orientation": o, "label_x_position": x, "label_y_position": y}
            for k, (s, sc, o, x, y) in zip(keys, self.labels[keys[0]:keys[-1] + 1].tolist())]


def test_tfds_puts_examples_back_in_row_major_order(tmp_path):
  rng = np.random.default_rng(1)
  marked = {int(i): rng.integers(0, 2, (64, 64, 1)).astype(np.uint8) for i in rng.integers(0, N, 20)}
  source = _ShuffledDSprites(marked)
  with tfds.testing.mock_data(as_data_source_fn=lambda self, split, **kwargs: source):
    data = dsprites.load_dsprites(source="tfds", data_dir=tmp_path, download=True)
  assert data.source == "tfds" and data.num_examples == N
  idx = np.array(sorted(marked))
  np.testing.assert_array_equal(data.images(idx), np.stack([marked[i] for i in idx]).astype(np.float32))
  assert data.images([int(np.setdiff1d(np.arange(100), idx)[0])]).sum() == 0
