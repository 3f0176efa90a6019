"""Clustering of codes against a Gaussian-mixture prior: component responsibilities, masses and alignment."""
import numpy as np
from scipy import ndimage
from scipy import special
from scipy import stats
from sklearn import metrics as sk_metrics

from decompvae.metrics import utils


def _check_mixture(component_means_KxD, component_variance, dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Validated (means [K, D], variances [K]) in float64."""
  means = np.asarray(component_means_KxD, dtype=np.float64)
  if means.ndim != 2 or means.shape[1] != dim or means.shape[0] < 1:
    raise ValueError(f"component means must be [K, {dim}], got shape {means.shape}")
  variance = np.asarray(component_variance, dtype=np.float64)
  if variance.shape not in ((), (means.shape[0],)):
    raise ValueError(f"component variance must be a scalar or [{means.shape[0]}], got shape {variance.shape}")
  variances = np.broadcast_to(variance, means.shape[:1])
  if not np.all(variances > 0):
    raise ValueError(f"component variances must be positive, got {component_variance}")
  return means, variances


def _codes(z, name: str = "codes") -> np.ndarray:
  """[..., D] codes flattened to [M, D] float64 (finite)."""
  z = np.asarray(z, dtype=np.float64)
  if z.ndim < 2:
    raise ValueError(f"{name} must be [..., num_points, num_dims], got shape {z.shape}")
  return utils.check_codes(z.reshape(-1, z.shape[-1]), name)


def component_responsibilities(z_NxD: np.ndarray, component_means_KxD: np.ndarray,
                               component_variance) -> np.ndarray:
  """[N, K]: posterior probability of each prior component given each code, under equal mixture weights.

    r_nk = N(z_n; μ_k, s_k² I) / Σ_j N(z_n; μ_j, s_j² I)

  computed from log densities (a softmax over k), so codes far from every component still get exact values.

  Args:
    z_NxD: codes, e.g. encoder means E[z|x] or samples z ~ q(z|x); any leading shape [..., D] is flattened.
    component_means_KxD: μ_k.
    component_variance: s², a scalar or one per component [K].

  Returns:
    float64 [N, K], rows summing to 1 (N = the number of codes after flattening).

  References:
    Mathieu et al. (2019), §5, the pinwheel experiment with the mixture prior (1/K) Σ_k N(μ_k, s² I);
    docs/science.md §3.
  """
  z = _codes(z_NxD)
  means, variances = _check_mixture(component_means_KxD, component_variance, z.shape[1])
  sq_dist_NxK = np.square(z[:, None, :] - means[None, :, :]).sum(-1)
  log_density_NxK = -0.5 * sq_dist_NxK / variances - 0.5 * z.shape[1] * np.log(2 * np.pi * variances)
  return special.softmax(log_density_NxK, axis=1)


def component_masses(z: np.ndarray, component_means_KxD: np.ndarray, component_variance) -> np.ndarray:
  """[K]: the share of the codes' distribution that each prior component holds, the mean responsibility.

    m_k = (1/N) Σ_n r_nk,   Σ_k m_k = 1

  With encoder means E[z|x_n] this is the mass of the means' empirical distribution; with samples
  z ~ q(z|x_n) (shape [S, N, D], or flattened) it is a Monte Carlo estimate of the mass of the aggregate
  posterior q(z) = (1/N) Σ_n q(z|x_n). A code equidistant from several components splits its mass equally
  among them: a single blob at the origin of the pinwheel prior gives every component ≈ 1/4 (see
  `within_component_fraction` for telling it from four clusters).

  Args:
    z: codes [..., D].
    component_means_KxD: μ_k.
    component_variance: s², scalar or [K].

  Returns:
    float64 [K].

  References:
    Mathieu et al. (2019), §5, Figure 4 (clustering of the aggregate posterior); docs/science.md §6.
  """
  return component_responsibilities(z, component_means_KxD, component_variance).mean(axis=0)


def occupied_components(z: np.ndarray, component_means_KxD: np.ndarray, component_variance,
                        min_mass: float = 0.1) -> int:
  """The number of prior components holding at least `min_mass` of the codes' mass: #{k : m_k ≥ min_mass}.

  m_k is `component_masses` (mean responsibility), from encoder means or from posterior samples, whichever
  `z` holds. For the pinwheel prior (K = 4): 4 when the codes form four clusters at the prior's means, 1 or 2
  when they have collapsed onto one or two of them.

  Args:
    z: codes [..., D].
    component_means_KxD: μ_k.
    component_variance: s², scalar or [K].
    min_mass: the threshold, in (0, 1].

  Returns:
    an int in [0, K].

  References:
    Mathieu et al. (2019), §5, Figure 4; docs/science.md §6.
  """
  if not 0 < min_mass <= 1:
    raise ValueError(f"min_mass must be in (0, 1], got {min_mass}")
  masses = component_masses(z, component_means_KxD, component_variance)
  return int(np.sum(masses >= min_mass))


def cluster_alignment(z_mean_NxD: np.ndarray, labels_N: np.ndarray, component_means_KxD: np.ndarray,
                      component_variance) -> float:
  """Normalised mutual information between the true cluster labels and the most responsible prior component.

    c_n = argmax_k r_nk(E[z|x_n]),   NMI = I(y; c) / ((H(y) + H(c)) / 2)

  with plug-in entropies of the empirical joint distribution of (y, c) (scikit-learn's
  `normalized_mutual_info_score`, arithmetic normalisation). It is invariant to relabelling, so it measures
  whether the arms map one to one onto components, not which onto which: 1 when they do, 0 when the
  assignment is constant (all codes collapsed onto one component) or independent of the labels. When both y
  and c are constant it is 1 (scikit-learn's convention).

  Args:
    z_mean_NxD: encoder means E[z|x_n].
    labels_N: integer cluster (pinwheel arm) of each point.
    component_means_KxD: μ_k.
    component_variance: s², scalar or [K].

  Returns:
    the NMI, a float in [0, 1].

  References:
    Strehl & Ghosh (2002), "Cluster Ensembles", JMLR 3, §2.1 (NMI); Mathieu et al. (2019), §5, Figure 4;
    docs/science.md §6.
  """
  z = utils.check_codes(z_mean_NxD, "z_mean_NxD")
  labels = np.asarray(labels_N)
  if labels.shape != (z.shape[0],):
    raise ValueError(f"labels must be [{z.shape[0]}], got shape {labels.shape}")
  assignment_N = component_responsibilities(z, component_means_KxD, component_variance).argmax(axis=1)
  return float(sk_metrics.normalized_mutual_info_score(labels, assignment_N, average_method="arithmetic"))


def within_component_fraction(z: np.ndarray, component_means_KxD: np.ndarray, component_variance,
                              quantile: float = 0.99) -> float:
  """The fraction of codes lying inside some prior component: min_k ‖z − μ_k‖² / s_k² ≤ χ²_D(quantile).

  χ²_D(q) is the q-quantile of the chi-square distribution with D degrees of freedom, so a draw from
  component k falls inside it with probability q (for D = 2, χ²_2(q) = −2 log(1 − q): radius 3.03 s at
  q = 0.99). Codes between components, such as a collapsed blob at the origin of the pinwheel prior
  (distance 1 = 5.8 s from every mean), count as outside, which the masses alone cannot show.

  Args:
    z: codes [..., D].
    component_means_KxD: μ_k.
    component_variance: s², scalar or [K].
    quantile: q in (0, 1).

  Returns:
    a float in [0, 1].

  References:
    Mathieu et al. (2019), §5, Figure 4; docs/science.md §6.
  """
  if not 0 < quantile < 1:
    raise ValueError(f"quantile must be in (0, 1), got {quantile}")
  codes = _codes(z)
  means, variances = _check_mixture(component_means_KxD, component_variance, codes.shape[1])
  scaled_sq_dist_NxK = np.square(codes[:, None, :] - means[None, :, :]).sum(-1) / variances
  return float(np.mean(scaled_sq_dist_NxK.min(axis=1) <= stats.chi2.ppf(quantile, codes.shape[1])))


def aggregate_posterior_modes(loc_NxD: np.ndarray, scale_NxD: np.ndarray, *, resolution: float = 0.0,
                              grid_size: int = 200, min_relative_density: float = 0.05) -> int:
  """The number of modes of the aggregate posterior q(z) = (1/N) Σ_n N(z; μ_n, diag σ_n²) of 2-D codes,
  seen at a `resolution`: q convolved with N(0, resolution² I), i.e. σ_n² + resolution² in each term.

  Near-deterministic encoders (σ_n → 0, e.g. with β = 0) make q a sum of N spikes, each its own mode; at the
  resolution of the prior's components (their standard deviation) the modes are the clusters the prior can
  tell apart. q is evaluated on a grid_size × grid_size grid spanning the means ± 3 of the largest standard
  deviation; a
  mode is a grid point at least as high as its 8 neighbours (touching such points form one mode) whose
  density is at least `min_relative_density` of the highest one (so numerical ripples in the tails do not count). This is what the paper's Figure 4
  shows: four separated modes, or clusters merged into one or two. Unlike component masses it does not
  depend on the prior: a single broad blob has one mode wherever it sits.

  Args:
    loc_NxD: posterior means μ_n, D = 2.
    scale_NxD: posterior standard deviations σ_n.
    resolution: the standard deviation of the smoothing (0: q itself).
    grid_size: grid points per axis (modes closer than two grid steps merge).
    min_relative_density: the height, relative to the highest mode, below which a maximum is ignored.

  Returns:
    the number of modes.

  References:
    Mathieu et al. (2019), §5, Figure 4; docs/science.md §6.8.
  """
  loc, scale = np.asarray(loc_NxD, np.float64), np.asarray(scale_NxD, np.float64)
  if loc.ndim != 2 or loc.shape[1] != 2 or scale.shape != loc.shape:
    raise ValueError(f"need 2-D codes: loc and scale of shape [N, 2], got {loc.shape} and {scale.shape}")
  if not (np.all(np.isfinite(loc)) and np.all(scale > 0)) or resolution < 0:
    raise ValueError("loc must be finite, scale positive and resolution non-negative")
  scale = np.sqrt(np.square(scale) + resolution ** 2)
  margin = 3.0 * scale.max()
  axes = [np.linspace(loc[:, d].min() - margin, loc[:, d].max() + margin, grid_size) for d in range(2)]
  # log N(z_d; μ_nd, σ_nd²) on each axis, [N, G]. Each term of q factorises over the axes, so on the grid
  # q[i, j] ∝ Σ_n w_n A[n, i] B[n, j]: one matrix product, with every row scaled by its maximum (A, B ≤ 1) and
  # w_n = exp(max_i a_ni + max_j b_nj), relative to the largest, so that nothing that matters underflows.
  a, b = (stats.norm.logpdf(grid[None, :], loc[:, d:d + 1], scale[:, d:d + 1]) for d, grid in enumerate(axes))
  a_max, b_max = a.max(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
  w = np.exp(a_max + b_max - np.max(a_max + b_max))
  density = (np.exp(a - a_max) * w).T @ np.exp(b - b_max)
  density /= density.max()
  padded = np.pad(density, 1, constant_values=-np.inf)
  neighbours = np.stack([padded[1 + dy:1 + dy + grid_size, 1 + dx:1 + dx + grid_size]
                         for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
  peaks = (density >= neighbours.max(axis=0)) & (density >= min_relative_density)
  return int(ndimage.label(peaks, structure=np.ones((3, 3)))[1])   # a flat top of equal points is one mode


def clustering_scores(z_mean_NxD: np.ndarray, labels_N: np.ndarray, component_means_KxD: np.ndarray,
                      component_variance, z_samples: np.ndarray | None = None,
                      min_mass: float = 0.1) -> dict[str, float | list[float]]:
  """All clustering measures of one set of codes, by name (for an evaluation's metrics dictionary).

  Keys: "nmi" (`cluster_alignment`, from the means), "masses" (`component_masses`, a list of K floats),
  "occupied" (`occupied_components`), "within_fraction" (`within_component_fraction`). The last three use
  `z_samples` (samples of q(z|x), the aggregate posterior) when given, else the means.

  Args:
    z_mean_NxD: encoder means E[z|x_n].
    labels_N: integer cluster of each point.
    component_means_KxD: μ_k.
    component_variance: s², scalar or [K].
    z_samples: optional samples z ~ q(z|x_n), [..., D].
    min_mass: threshold of `occupied_components`.

  Returns:
    a dict of floats (and the list of masses).

  References:
    Mathieu et al. (2019), §5, Figure 4; docs/science.md §6.
  """
  z = z_mean_NxD if z_samples is None else z_samples
  masses = component_masses(z, component_means_KxD, component_variance)
  return {
      "nmi": cluster_alignment(z_mean_NxD, labels_N, component_means_KxD, component_variance),
      "masses": masses.tolist(),
      "occupied": float(occupied_components(z, component_means_KxD, component_variance, min_mass)),
      "within_fraction": within_component_fraction(z, component_means_KxD, component_variance),
  }
