"""Device mesh and placement helpers: the only module that decides where arrays live.

Data parallelism is `jax.jit` over a one-axis `Mesh` ('data') with global-view arrays: parameters and
optimiser state are replicated (`P()`), batches are split along their leading axis (`P('data')`). The
objective is written for the *global* batch, so batch-level divergences (MMD, inclusive KL) do not change
with the number of devices; XLA inserts the collectives. See BUILD_NOTES.md ("Data parallelism").
"""

from collections.abc import Sequence
import hashlib

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MEMBER_AXIS = "members"


def make_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = DATA_AXIS) -> Mesh:
  """A one-axis mesh over `devices` (default: every device of every process).

  The axis type is `Auto`, so sharding propagates through the library's plain `jnp` code without
  explicit `reshard` calls (jax >= 0.7 makes `Explicit` the `make_mesh` default).
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (axis_name,), axis_types=(AxisType.Auto,), devices=devices)


def largest_divisor(n: int, at_most: int) -> int:
  """The largest d <= at_most dividing n: how many devices a batch (or a sweep's members) splits over."""
  return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of a replicated array (parameters, optimiser state, the device-resident dataset)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch split along its leading axis over the 'data' axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def member_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of a sweep's stacked members, split along their leading axis over the 'members' axis."""
  return NamedSharding(mesh, P(MEMBER_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raises ValueError unless the global batch splits evenly over the mesh's 'data' axis."""
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    raise ValueError(
        f"batch size {batch_size} does not split evenly over {n} devices; choose a multiple of {n} "
        f"(e.g. {max(n, batch_size // n * n)}) or run on fewer devices.")


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` on all devices of `mesh` (works across processes).

  Across processes each process passes its own copy of the host values (numpy arrays, uncommitted jax arrays),
  which must be equal: they are checked with one all-gather of per-leaf fingerprints, and a leaf that differs
  raises ValueError naming it. (`jax.device_put` would check each leaf by all-gathering the leaf itself.)
  """
  sharding = replicated(mesh)
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  leaves = {jax.tree_util.keystr(path): x for path, x in flat}
  host = {name: _host_value(x) for name, x in leaves.items() if _is_host_value(x)}
  _check_same_on_every_process(host)
  placed = [jax.make_array_from_callback(host[name].shape, sharding, host[name].__getitem__) if name in host
            else jax.device_put(x, sharding) for name, x in leaves.items()]
  return jax.tree.unflatten(treedef, placed)


def _is_host_value(x) -> bool:
  """A value each process holds in full: a numpy array or scalar, or a local jax array that is not committed
  to a device and not weakly typed (numpy cannot carry weak types)."""
  if isinstance(x, (np.ndarray, np.generic)):
    return True
  return isinstance(x, jax.Array) and x.is_fully_addressable and not x.committed and not x.weak_type


def _host_value(x) -> np.ndarray:
  x = np.asarray(x)
  return x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)


def _check_same_on_every_process(values: dict[str, np.ndarray]) -> None:
  """Raises ValueError unless every process holds the same `values` (one all-gather of 8-byte fingerprints)."""
  def fingerprint(v):
    digest = hashlib.blake2b(f"{v.dtype.str}{v.shape}".encode(), digest_size=8)
    digest.update(np.ascontiguousarray(v).view(np.uint8).reshape(-1))
    return np.frombuffer(digest.digest(), np.uint32)
  mine = np.stack([fingerprint(v) for v in values.values()]) if values else np.zeros((0, 2), np.uint32)
  every = np.asarray(multihost_utils.process_allgather(mine))             # [processes, leaves, 2]
  differ = [name for k, name in enumerate(values) if np.any(every[:, k] != every[0, k])]
  if differ:
    raise ValueError(f"replicate: processes passed different values for {', '.join(differ)}; every process "
                     "must pass the same values (e.g. the same seed and data)")


def shard_host_batch(local_batch: np.ndarray, mesh: Mesh, batch_size: int | None = None) -> jax.Array:
  """Assembles a global batch from each process's local share (the host-streaming path).

  `batch_size`, the global batch size, is inferred from the local share when not given.
  """
  global_shape = None if batch_size is None else (batch_size, *local_batch.shape[1:])
  return jax.make_array_from_process_local_data(batch_sharded(mesh), local_batch, global_shape)


def place(tree, mesh: Mesh | None = None):
  """`replicate(tree, mesh)`, or onto the default device when there is no mesh."""
  return jax.device_put(tree) if mesh is None else replicate(tree, mesh)


def constrain(x, sharding: NamedSharding | None):
  """Inside jit, lays `x` out as `sharding` (None: as XLA chooses).

  A mesh whose axes are all `Explicit` needs `jax.reshard`; an `Auto` mesh takes a sharding constraint.
  """
  if sharding is None:
    return x
  if sharding.mesh.are_all_axes_explicit:
    return jax.reshard(x, sharding)
  return jax.lax.with_sharding_constraint(x, sharding)


def process_batch_rows(batch_size: int, mesh: Mesh) -> slice:
  """The rows of a global batch sharded `batch_sharded(mesh)` that this process's devices hold.

  Raises ValueError unless they are contiguous (true when the mesh orders its devices by process, as
  `make_mesh` does), which `shard_host_batch` needs.
  """
  index_map = batch_sharded(mesh).addressable_devices_indices_map((batch_size,))
  starts = sorted({index[0].start or 0 for index in index_map.values()})
  shard = batch_size // mesh.shape[DATA_AXIS]
  lo, hi = starts[0], starts[-1] + shard
  if hi - lo != len(starts) * shard:
    raise ValueError("this process's devices must hold a contiguous part of the batch (mesh order by process)")
  return slice(lo, hi)
