"""Expected failures a user can fix: one base class the command line turns into one line and exit 2.

Everything a user can cause by what they pass (a config key, a data path, a corrupt artefact, a
checkpoint of another run, an impossible shape) raises a subclass of :class:`UserError` whose message
names the culprit (file, key or value) and what to do. ``reprokit.papercli`` prints that message and
exits with status 2; ``--debug`` shows the traceback as well. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "DataError", "ShapeError"]


class UserError(Exception):
    """Base class of the expected, user-fixable failures (exit status 2 on the command line)."""


class DataError(UserError, FileNotFoundError):
    """Missing, unreadable or malformed input data; the message names the file or folder."""


class ShapeError(UserError, ValueError):
    """A configuration whose shapes cannot work together (e.g. a size not divisible by a patch)."""
