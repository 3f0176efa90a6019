"""Input pipeline: datasets resident on the accelerator, each batch a pure function of (seed, step)."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from decompvae import parallel
from decompvae.data import dsprites as dsprites_lib
from decompvae.data import fashion_mnist as fashion_mnist_lib
from decompvae.data import packing

_ROUNDS = 6  # Feistel rounds; 4 already give a pseudo-random permutation (Luby and Rackoff 1988)
_STREAM = np.uint32(0x5EEDDA7A)  # separates the shuffling keys from any other use of the same seed
# uint32 constants as numpy scalars: jax refuses Python ints above the int32 range.
_M1, _M2, _GOLDEN, _EPOCH_SALT = (np.uint32(c) for c in (0x7FEB352D, 0x846CA68B, 0x9E3779B9, 0x27D4EB2F))


# ----------------------------------------------------------------------------------------------------------
# Shuffling: a keyed bijection of [0, N) per epoch, evaluated per element (a Feistel network + cycle walking).


def _mix32(x):
  """lowbias32 (C. Wellons' hash-prospector): a fast invertible mixing of uint32 values, numpy or jax."""
  x = x ^ (x >> 16)
  x = x * _M1
  x = x ^ (x >> 15)
  x = x * _M2
  return x ^ (x >> 16)


def _round_keys(seed, epoch, xp):
  """uint32 [_ROUNDS]: the round keys of epoch `epoch` of seed `seed` (identical in numpy and jax)."""
  seed, epoch = (xp.reshape(xp.asarray(v).astype(xp.uint32), (1,)) for v in (seed, epoch))
  rounds = xp.arange(_ROUNDS, dtype=xp.uint32)
  return _mix32(_mix32((seed ^ _STREAM) + rounds * _GOLDEN) ^ _mix32(epoch + _EPOCH_SALT))


def _feistel(x, keys, half_bits: int):
  """A balanced Feistel network on [0, 4**half_bits): a bijection for any round keys."""
  mask = (1 << half_bits) - 1
  left, right = x >> half_bits, x & mask
  for k in range(_ROUNDS):
    left, right = right, left ^ (_mix32(right ^ keys[k]) & mask)
  return (left << half_bits) | right


def _permute(position, num_examples: int, keys, xp):
  """π(position) for the bijection π of [0, N) defined by `keys`: walk the cycle until back inside [0, N)."""
  half_bits = max(1, -(-(num_examples - 1).bit_length() // 2))
  x = _feistel(position, keys, half_bits)
  step = lambda x: xp.where(x >= num_examples, _feistel(x, keys, half_bits), x)
  if xp is np:
    while np.any(x >= num_examples):
      x = step(x)
    return x
  return jax.lax.while_loop(lambda x: jnp.any(x >= num_examples), step, x)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch, S = N // B; the last N mod B examples of each epoch's order are dropped.

  References:
      docs/science.md §5 (batch sizes: 64 of 737,280, 500 of 60,000, 400 of 400 divide exactly).
  """
  if not 0 < batch_size <= num_examples:
    raise ValueError(f"batch_size must be in 1..{num_examples} (the number of examples); got {batch_size}")
  return num_examples // batch_size


def batch_indices(seed, step, *, num_examples: int, batch_size: int, xp=jnp):
  """Example indices of training batch `step`: epoch-wise shuffling without replacement.

  With S = N // B steps per epoch, step t belongs to epoch e = t // S and takes positions (t mod S)·B + b,
  b < B, of the epoch's permutation π_{seed,e} of [0, N). The last partial batch is dropped: the N mod B
  examples at the end of each epoch's order (different ones every epoch) are not used in that epoch, so every
  batch is full and every example appears at most once per epoch (exactly once when B divides N, as for all
  the paper's settings). π is a 6-round Feistel network on [0, 4^h), 4^h >= N, with round keys hashed from
  (seed, e), restricted to [0, N) by cycle walking: O(B) work per batch, no state, the same in numpy and jax.
  Batches are thus a pure function of (seed, step): a resumed run needs no iterator state, and any process or
  device can compute any batch.

  Args:
      seed: the data seed (int, may be traced).
      step: the training step (int, may be traced).
      num_examples: N (static).
      batch_size: B (static).
      xp: jax.numpy (jittable) or numpy (host path); both give the same indices.

  Returns:
      int32 [B] indices in [0, N).

  References:
      Luby and Rackoff (1988), pseudo-random permutations from Feistel networks; Black and Rogaway (2002),
      "Ciphers with arbitrary finite domains" (cycle walking).
  """
  per_epoch = steps_per_epoch(num_examples, batch_size)
  epoch, within = step // per_epoch, step % per_epoch
  position = (within * batch_size + xp.arange(batch_size)).astype(xp.uint32)
  return _permute(position, num_examples, _round_keys(seed, epoch, xp), xp).astype(xp.int32)


# ----------------------------------------------------------------------------------------------------------
# Device-resident datasets.


def decode_packed_bits(rows):
  """float32 [B, 64, 64, 1] in {0, 1} from bit-packed dSprites rows uint8 [B, 512] (bit order "big").

  dSprites stays bit-packed on the device (377 MB) and is unpacked per batch: never 11 GiB of float32.

  References:
      docs/science.md §7.
  """
  size = packing.IMAGE_SIZE
  return jnp.unpackbits(rows, axis=-1).reshape(-1, size, size, 1).astype(jnp.float32)


def decode_float(rows):
  """The rows as float32 (pinwheel points).

  References:
      docs/science.md §7 (pinwheel).
  """
  return rows.astype(jnp.float32)


@flax.struct.dataclass
class DeviceDataset:
  """A dataset on the accelerator: compact `storage` rows, and `decode` mapping a batch of rows to float32.

  `indices` (optional, int32 [M]) restricts the dataset to those rows, e.g. a training split.
  """

  storage: jax.Array  # [N, ...]: dSprites uint8 [N, 512] bits; Fashion-MNIST uint8 [N, 32, 32, 1]; float32 [N, 2]
  indices: jax.Array | None = None
  decode: Callable[[jax.Array], jax.Array] = flax.struct.field(pytree_node=False, default=decode_float)

  @property
  def num_examples(self) -> int:
    return (self.storage if self.indices is None else self.indices).shape[0]


def to_device(data: Any, *, indices=None, mesh: Mesh | None = None) -> DeviceDataset:
  """Puts a dataset on the accelerator in its compact form, replicated over `mesh` if given.

  Each device then gathers and decodes its own slice of every batch inside the jitted step, so training needs
  no host input pipeline, also across processes.

  dSprites (`DSprites`) stays bit-packed (uint8 [737280, 512], 377 MB) and is unpacked per batch; Fashion-MNIST
  (`LabelledImages`) stays uint8 and is scaled and clamped per batch; an array (pinwheel points) is stored as
  float32. Never the whole of dSprites as float32 (11 GiB).

  Args:
      data: a `DSprites`, a `LabelledImages` or a float array [N, ...].
      indices: optional rows to use (e.g. a training split from `holdout_split`).
      mesh: a mesh with a 'data' axis; the data are replicated on it (`parallel.replicate`).

  Returns:
      `DeviceDataset`.

  References:
      docs/science.md §7 (dSprites memory).
  """
  if isinstance(data, dsprites_lib.DSprites):
    storage, decode = data.packed, decode_packed_bits
  elif isinstance(data, fashion_mnist_lib.LabelledImages):
    storage, decode = data.images, fashion_mnist_lib.to_unit_interval
  else:
    storage, decode = np.asarray(data, np.float32), decode_float
  indices = None if indices is None else parallel.place(np.asarray(indices, np.int32), mesh)
  return DeviceDataset(parallel.place(storage, mesh), indices, decode)


def holdout_split(num_examples: int, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A random split of range(num_examples): (train indices, test indices), each sorted.

  References:
      docs/science.md §5 (dSprites: the whole set, as the authors, or a held-out split).
  """
  order = np.random.default_rng(seed).permutation(num_examples)
  num_test = int(round(test_fraction * num_examples))
  return np.sort(order[num_test:]), np.sort(order[:num_test])


def _batch_sharding(mesh: Mesh | None, batch_size: int) -> NamedSharding | None:
  if mesh is None:
    return None
  parallel.check_batch_size(batch_size, mesh)
  return parallel.batch_sharded(mesh)


def get_batch(data: DeviceDataset, seed, step, *, batch_size: int, sharding: NamedSharding | None = None):
  """Training batch `step` for `seed`, decoded to float32, on the device: x_BxX = decode(storage[π(...)]).

  Pure and jittable (`batch_size` and `sharding` static); see `batch_indices` for the order. With a
  `sharding` (`parallel.batch_sharded(mesh)`) each device gathers and decodes only its slice of the batch;
  the global batch is the same for any number of devices.
  """
  idx = batch_indices(seed, step, num_examples=data.num_examples, batch_size=batch_size)
  if data.indices is not None:
    idx = data.indices[idx]
  idx = parallel.constrain(idx, sharding)
  explicit = sharding is not None and sharding.mesh.are_all_axes_explicit
  rows = data.storage.at[idx].get(out_sharding=sharding if explicit else None)
  return parallel.constrain(data.decode(rows), sharding)


def make_batch_fn(batch_size: int, *, mesh: Mesh | None = None) -> Callable:
  """jit of `get_batch`: (data, seed, step) -> global batch, split over the 'data' axis of `mesh` if given.

  Raises:
      ValueError: if `batch_size` is not a multiple of the mesh's 'data' axis size.
  """
  sharding = _batch_sharding(mesh, batch_size)
  return jax.jit(lambda data, seed, step: get_batch(data, seed, step, batch_size=batch_size, sharding=sharding))


# ----------------------------------------------------------------------------------------------------------
# Host streaming, for data that do not fit on the device.


def host_batch(fetch: Callable[[np.ndarray], np.ndarray], num_examples: int, seed: int, step: int, *,
               batch_size: int, mesh: Mesh) -> jax.Array:
  """Global batch `step` assembled from host data: each process fetches only the rows its devices hold.

  The indices are those of `batch_indices` (computed in numpy; the same batches as the device path), so a
  run can switch between the two paths. Works across processes: every process computes the same global
  indices and contributes its own rows (`parallel.shard_host_batch`).

  Args:
      fetch: maps int indices [n] to float32 examples [n, ...] (e.g. `DSprites.images`).
      num_examples: N.
      seed, step: as for `batch_indices`.
      batch_size: the global batch size B.
      mesh: the mesh; the batch is split over its 'data' axis (`parallel.batch_sharded`).

  Returns:
      float32 [B, ...] jax.Array sharded `parallel.batch_sharded(mesh)`.

  References:
      JAX multi-process documentation (`jax.make_array_from_process_local_data`).
  """
  parallel.check_batch_size(batch_size, mesh)
  idx = batch_indices(seed, step, num_examples=num_examples, batch_size=batch_size, xp=np)
  local = fetch(idx[parallel.process_batch_rows(batch_size, mesh)])
  return parallel.shard_host_batch(local, mesh, batch_size)
