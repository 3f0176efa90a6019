"""Sparsity of codes: normalised Hoyer measure and per-class average latent magnitude."""
import numpy as np

from decompvae.metrics import utils


def hoyer_sparsity(z_NxD: np.ndarray, normalize: bool = True) -> float:
  """Normalised Hoyer sparsity, (√D − r) / (√D − 1) with r = mean over points of ‖z‖₁ / ‖z‖₂, in [0, 1].

  1 for one-hot codes, 0 when every coordinate of a point has the same magnitude. With `normalize` each dimension
  is first divided by its standard deviation over the points, so that a dimension that is small everywhere does
  not count as sparse; constant dimensions are then dropped (D counts the others). An all-zero code counts as
  maximally sparse (r = 1).

  Args:
    z_NxD: codes (test-set encoder means).
    normalize: divide each dimension by its std first (the paper's setting).

  Returns:
    the sparsity, a float.

  References:
    Hoyer (2004), "Non-negative Matrix Factorization with Sparseness Constraints", §3; Mathieu et al. (2019), §5
    and docs/science.md §6.
  """
  z = utils.check_codes(z_NxD).astype(np.float64)
  if normalize:
    varies = np.ptp(z, axis=0) > 0
    z = z[:, varies] / z[:, varies].std(axis=0)
  dim = z.shape[1]
  if dim < 2:
    raise ValueError(f"Hoyer sparsity needs at least 2 (non-constant) dimensions, got {dim}")
  l1 = np.abs(z).sum(axis=1)
  l2 = np.sqrt(np.square(z).sum(axis=1))
  ratio = np.where(l2 > 0, l1 / np.where(l2 > 0, l2, 1.0), 1.0)
  return float((np.sqrt(dim) - ratio.mean()) / (np.sqrt(dim) - 1))


def latent_magnitude_per_class(z_NxD: np.ndarray, labels_N: np.ndarray, num_classes: int | None = None,
                               normalize: bool = False) -> np.ndarray:
  """[C, D]: mean over the points of each class of |z_d| (the paper's Fashion-MNIST sparsity figure).

  Args:
    z_NxD: codes.
    labels_N: integer class of each point, in [0, num_classes).
    num_classes: C (default: max label + 1); every class must have at least one point.
    normalize: divide each dimension by its standard deviation first (as `hoyer_sparsity`; constant dims → 0).

  Returns:
    float64 [C, D].

  References:
    Mathieu et al. (2019), §5, Figure 5.
  """
  codes = utils.check_codes(z_NxD).astype(np.float64)
  z = np.abs(codes)
  labels = np.asarray(labels_N)
  if labels.shape != (z.shape[0],):
    raise ValueError(f"labels must be [{z.shape[0]}], got shape {labels.shape}")
  if normalize:
    z = z / np.where(np.ptp(codes, axis=0) > 0, codes.std(axis=0), np.inf)
  counts = np.bincount(labels, minlength=num_classes or 0)
  if num_classes is not None and counts.size > num_classes:
    raise ValueError(f"labels must lie in [0, {num_classes})")
  if np.any(counts == 0):
    raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no points")
  sums = np.zeros((counts.size, z.shape[1]))
  np.add.at(sums, labels, z)
  return sums / counts[:, None]
