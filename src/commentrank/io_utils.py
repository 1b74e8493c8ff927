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
        usual_permissions(tmp)  # mkstemp makes owner-only files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def usual_permissions(path: str | os.PathLike) -> None:
    """Give a file the permissions a plain `open` would (0666 less the umask): mkstemp, and transformers' safetensors
    writer, make owner-only files, which the other users of a shared model folder could not read."""
    os.chmod(path, 0o666 & ~_current_umask())


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


DEBUG_ENV = "COMMENTRANK_DEBUG"  # =1 (or a script's --debug): errors show their traceback


class UsageError(ValueError):
    """A bad argument or recipe value: the script stops with one line and exit code 2 (as argparse does)."""


_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]+@")  # scheme://user:password@
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{8,}")  # the shape of a Hugging Face access token


def redact(text: str, *tokens: str | None) -> str:
    """`text` safe to print or write: the credentials of a URL (`scheme://user:password@` -> `scheme://***@`), the
    `tokens` given, `HF_TOKEN` and the logged-in token (as written and URL-encoded), and anything shaped like a Hugging
    Face token (`hf_...`), each replaced by `***`. Every error, log line and traceback that may hold one goes through
    it."""
    from urllib.parse import quote

    text = _URL_CREDENTIALS.sub(r"\1***@", str(text))
    secrets = {t.strip() for t in (*tokens, os.environ.get("HF_TOKEN"), _logged_in_token()) if t and t.strip()}
    for secret in sorted(secrets, key=len, reverse=True):  # a longer secret first: one may contain another
        for form in (secret, quote(secret, safe="")):
            text = text.replace(form, "***")
    return _HF_TOKEN.sub("***", text)


def _logged_in_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # no huggingface_hub, an unreadable token file: nothing to hide
        return None


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
    line = f"{prog}: error: {' '.join(redact(message).split())}"
    print(line, file=sys.stderr)
    stop = SystemExit(line)
    stop.code = 2
    raise stop


@contextlib.contextmanager
def exits_on_bad_input(prog: str, *also: type[BaseException]):
    """Bad input (a file, a folder, a field, a setting: FileNotFoundError and ValueError, which our named input errors
    are) ends a script with one line that names it, `prog: error: ...`, instead of a traceback: exit code 1, or 2
    for a UsageError. With COMMENTRANK_DEBUG=1 (a script's --debug) its traceback is printed, redacted; exit code 1."""
    try:
        yield
    except (FileNotFoundError, ValueError, *also) as err:
        if debug_enabled():  # the traceback, chained causes included, redacted: a Hub error's cause may hold a token
            import traceback

            print(redact("".join(traceback.format_exception(err))), file=sys.stderr, end="")
            raise SystemExit(1) from None
        if isinstance(err, UsageError):
            usage_exit(prog, err)
        raise SystemExit(f"{prog}: error: {redact(err)}") from None
