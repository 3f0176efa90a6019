"""The errors a user can act on: the command line prints their message (no traceback) and exits non-zero."""


class RunError(RuntimeError):
  """A problem the user must resolve (a bad setting, a workdir in use or holding another run); says how."""
