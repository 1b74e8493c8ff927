"""Small file helpers: atomic text files (a crash never leaves a half-written file), telling a Hub id from a local
path, and one-line errors for bad input and bad arguments. Whole output folders: `commentrank.outputs`; the
scripts' parsers: `commentrank.cli`."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

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


DEBUG_ENV = "COMMENTRANK_DEBUG"  # =1 (or a script's --debug): errors show their traceback


class UsageError(ValueError):
    """A bad argument or recipe value: the script stops with one line and exit code 2 (as argparse does)."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def closest(value: str, choices: Iterable[str]) -> str | None:
    """The closest of `choices` to a mistyped `value` (difflib), or None when none is close."""
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(value: str, choices: Iterable[str], quote: str = "'") -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, or ''."""
    match = closest(value, choices)
    return f" (did you mean {quote}{match}{quote}?)" if match else ""


def check_choice(key: str, value, choices: Iterable[str]) -> None:
    """UsageError naming the key, the allowed values and the closest one, unless `value` is one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise UsageError(f"{key} {value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}")


def check_at_least(obj, names: Iterable[str], minimum: int = 1) -> None:
    """UsageError unless each of the named attributes of `obj` is None or at least `minimum`."""
    for name in names:
        value = getattr(obj, name, None)
        if value is not None and not isinstance(value, bool) and value < minimum:
            raise UsageError(f"{name} must be at least {minimum}, got {value}")


def usage_exit(prog: str, message) -> NoReturn:
    """Print `prog: error: message` (one line) and exit with code 2; the SystemExit's text is the line too."""
    line = f"{prog}: error: {' '.join(str(message).split())}"
    print(line, file=sys.stderr)
    stop = SystemExit(line)
    stop.code = 2
    raise stop


@contextlib.contextmanager
def exits_on_bad_input(prog: str, *also: type[BaseException]):
    """Bad input (a file, a folder, a field, a setting: FileNotFoundError and ValueError, which our named input errors
    are) ends a script with one line that names it, `prog: error: ...`, instead of a traceback: exit code 1, or 2
    for a UsageError. With COMMENTRANK_DEBUG=1 (a script's --debug) the error is raised with its traceback."""
    try:
        yield
    except (FileNotFoundError, ValueError, *also) as err:
        if debug_enabled():
            raise
        if isinstance(err, UsageError):
            usage_exit(prog, err)
        raise SystemExit(f"{prog}: error: {err}") from None
