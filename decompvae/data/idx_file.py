"""The IDX file format of MNIST and Fashion-MNIST, plain or gzip-compressed."""

from __future__ import annotations

import gzip
import pathlib
import zlib

import numpy as np

from decompvae.data.errors import DataError

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FIX = "Replace it with an intact copy (download or install it again)."


def read_idx(path) -> np.ndarray:
  """Reads an IDX file (gzip-compressed or not, told apart by its first bytes).

  Format: 2 zero bytes, a type code, the number of dimensions d, d big-endian uint32 sizes, then the data in
  row-major order, big-endian.

  Args:
      path: the file.

  Returns:
      The array, in native byte order.

  Raises:
      DataError: the file is missing, a truncated or corrupt gzip stream, not an IDX file, or holds another
          number of bytes than its header announces.

  References:
      LeCun et al., "The MNIST database" (yann.lecun.com/exdb/mnist), "THE IDX FILE FORMAT".
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"IDX file {path} not found{' (it is a directory)' if path.is_dir() else ''}.")
  raw = path.read_bytes()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:  # truncated stream; bad header, CRC or length; bad deflate data
      raise DataError(f"IDX file {path} is a truncated or corrupt gzip file ({type(e).__name__}: {e}), e.g. "
                      f"from an interrupted download. {_FIX}") from e
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES or len(raw) < 4 + 4 * raw[3]:
    raise DataError(f"{path} is not an IDX file (it starts with the bytes {raw[:4].hex() or 'nothing'}, not "
                    f"0000, a type code and a rank). {_FIX}")
  ndim = raw[3]
  shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  offset = 4 + 4 * ndim
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(raw) - offset != expected:
    raise DataError(f"IDX file {path} is {'truncated' if len(raw) - offset < expected else 'too long'}: its "
                    f"header says {dtype} {shape} ({expected} bytes of data), the file holds "
                    f"{len(raw) - offset}. {_FIX}")
  return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))
