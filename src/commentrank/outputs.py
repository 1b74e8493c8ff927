"""Output folders that never lose a file: commentrank replaces only what it wrote itself, and never half of it.

Every output folder carries a marker, `.commentrank-output.json`, naming the kind of run that wrote it ("data_prep",
"scores", "reward_model", ...). Before any work, `check_output_dir` refuses

- a path that is a file, or a folder holding files without the marker (whatever commentrank did not write);
- a folder written by another kind of commentrank run (unless `overwrite`);
- an output that is, or contains, one of the run's inputs.

`OutputDir` then builds the whole output set in one temporary folder beside the target, named with the process id, and
moves it into place at once when the block succeeds (the old output, if any, is removed only after that). A run that
is killed leaves only its temporary folder, which the next run into the same place removes.

    check_output_dir("outputs/data", "data_prep", inputs=["raw.jsonl"])   # before the long work
    with OutputDir("outputs/data", "data_prep") as tmp:
        dataset.save_to_disk(tmp / "listwise")
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from commentrank.io_utils import _current_umask, atomic_write_text

logger = logging.getLogger(__name__)

MARKER = ".commentrank-output.json"
_TMP, _OLD = ".tmp-", ".old-"


class OutputDirError(ValueError):
    """An output path that commentrank must not write to; the message names it and says what to do."""


def read_marker(folder: str | os.PathLike) -> dict | None:
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def check_output_dir(path: str | os.PathLike, kind: str, *, inputs=(), overwrite: bool = False) -> None:
    """Raise `OutputDirError` unless `path` may receive a `kind` output: absent, an empty folder, or an earlier
    commentrank output of the same kind (of any kind with `overwrite`), and neither equal to nor containing an
    input."""
    target = Path(path).resolve()
    for source in inputs:
        if source is None or not os.path.exists(source):  # a Hub id, or nothing that could be lost
            continue
        source_path = Path(source).resolve()
        if source_path == target or target in source_path.parents:
            raise OutputDirError(f"output_dir {path} is or contains the input {source}: choose another output folder")
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise OutputDirError(
            f"output_dir {path} is a file: commentrank writes a folder there, and replaces only folders it wrote "
            "itself; choose another path"
        )
    entries = list(target.iterdir())
    if not entries:
        return
    marker = read_marker(target)
    if marker is None:
        names = sorted(p.name for p in entries)
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise OutputDirError(
            f"output_dir {path} holds files that commentrank did not write ({shown}): choose another folder, or "
            "empty it"
        )
    if marker["kind"] != kind and not overwrite:
        raise OutputDirError(
            f"output_dir {path} holds a commentrank {marker['kind']} output, not a {kind} output: choose another "
            "folder, or pass --overwrite_output true to replace it"
        )


def write_marker(folder: str | os.PathLike, kind: str) -> None:
    from commentrank import __version__

    atomic_write_text(Path(folder) / MARKER, json.dumps({"kind": kind, "commentrank": __version__}) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders that killed runs left beside `path` (those of live processes are kept)."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for prefix in (_TMP, _OLD):
        for leftover in path.parent.glob(f".{path.name}{prefix}*"):
            try:
                pid = int(leftover.name[len(f".{path.name}{prefix}") :].split("-")[0])
            except ValueError:
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    if removed:
        logger.info("removed %d leftover temporary folder(s) of killed runs beside %s", len(removed), path)
    return removed


class OutputDir:
    """A `kind` output folder built under a temporary name and moved into place only when the block succeeds.

    The target is checked first (`check_output_dir`, with `inputs` and `overwrite`), and checked again before the move
    in case something appeared there meanwhile. The temporary folder holds the marker from the start.
    """

    def __init__(self, path: str | os.PathLike, kind: str, *, inputs=(), overwrite: bool = False):
        self.path, self.kind, self.inputs, self.overwrite = Path(path), kind, tuple(inputs), overwrite

    def __enter__(self) -> Path:
        check_output_dir(self.path, self.kind, inputs=self.inputs, overwrite=self.overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(self.path)
        self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}{_TMP}{os.getpid()}-"))
        write_marker(self.tmp, self.kind)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            check_output_dir(self.path, self.kind, overwrite=self.overwrite)
        except OutputDirError:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        os.chmod(self.tmp, 0o777 & ~_current_umask())  # mkdtemp makes an owner-only folder: give the usual permissions
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}{_OLD}{os.getpid()}-{os.urandom(3).hex()}")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def claim_output_dir(path: str | os.PathLike, kind: str, *, inputs=(), overwrite: bool = False) -> None:
    """For a run that writes into its folder as it goes (training: checkpoints, then the model): check it, then create
    it with the marker, so that the same command can resume there and nothing else is written over."""
    check_output_dir(path, kind, inputs=inputs, overwrite=overwrite)
    Path(path).mkdir(parents=True, exist_ok=True)
    if read_marker(path) is None or read_marker(path)["kind"] != kind:
        write_marker(path, kind)
