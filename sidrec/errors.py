"""The one error type for bad input or configuration, and the one-line summary of any other failure."""

from __future__ import annotations

import os


class UserError(ValueError):
    """A problem with the user's input or configuration; reported as one line, without a traceback."""


def one_line_summary(exc: BaseException) -> str:
    r"""``Type: first line of the message [in module]``, where the module is the library frame that raised it.

    Example:
        >>> one_line_summary(ValueError("bad thing\nmore detail"))
        'ValueError: bad thing'
    """
    import traceback

    first = (str(exc).strip().splitlines() or [""])[0]
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        path = frames[-1].filename
        marker = f"{os.sep}site-packages{os.sep}"
        if marker in path:
            where = f" [in {path.split(marker, 1)[1].split(os.sep, 1)[0]}]"
    return f"{type(exc).__name__}: {first}{where}"
