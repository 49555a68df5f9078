"""Errors raised by :mod:`jrs_jax.data` for problems with the user's files or data."""

from __future__ import annotations

import os

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file (or a pair of files) cannot be used as it is.

    The message is one line that starts with the file name(s) and states the problem with
    the offending shape, dtype or value, e.g.
    ``labels/case_003.nii.gz: label map has 3 non-integer values (e.g. 1.5 at voxel (3, 4, 5))``.

    Attributes:
      path: the file concerned (``str``), or several joined with ``" / "``; ``None`` if no
        file is involved.
      problem: the message without the file name.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always a single line
        message = self.problem if self.path is None else f"{self.path}: {self.problem}"
        super().__init__(message)

    def __reduce__(self):  # keep pickling (multiprocessing data loaders) working
        return (type(self), (self.path, self.problem))
