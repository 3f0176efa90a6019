"""The one exception for missing or unusable data files: `DataError`."""


class DataError(ValueError):
  """A data file or directory is missing, unreadable, corrupt or not what its loader expects.

  Raised only for problems with the data themselves (a missing file, a truncated archive, wrong shapes or
  values, an unprepared TFDS dataset), never for a bad argument or a bug, so a front end can catch it and
  show its one-paragraph message (what is wrong with which file and how to fix it) without a traceback.
  A subclass of ValueError, so that code catching ValueError for bad inputs still catches it.
  """
