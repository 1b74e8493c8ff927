"""Small file helpers: atomic text files (a crash never leaves a half-written file), telling a Hub id from a local
path, and one-line errors for bad input. Whole output folders: `commentrank.outputs`."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_id(name: str) -> bool:
    """Whether `name` has the shape of a Hub repo id (`name` or `owner/name`) rather than of a local path."""
    return bool(HUB_ID.match(str(name))) and not str(name).startswith((".", "/", "~"))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-"
    )  # the pid: leftovers of killed runs
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def exits_on_bad_input(prog: str, *also: type[BaseException]):
    """Bad input (a file, a folder, a field, a setting: FileNotFoundError and ValueError, which our named input errors
    are) ends a script with one line that names it, `prog: error: ...`, instead of a traceback."""
    try:
        yield
    except (FileNotFoundError, ValueError, *also) as err:
        raise SystemExit(f"{prog}: error: {err}") from None
