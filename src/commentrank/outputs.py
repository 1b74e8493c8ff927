"""Output folders that never lose a file: commentrank replaces only what it wrote itself, and never half of it.

Every output folder carries a marker, `.commentrank-output.json`, naming the kind of run that wrote it ("data_prep",
"scores", "reward_model", ...) and listing the entries (files and folders) that run wrote. Before any work,
`check_output_dir` refuses

- a path that is a file, or a folder holding files without the marker (whatever commentrank did not write);
- a folder written by another kind of commentrank run (unless `overwrite`);
- an output that is, contains, or is inside one of the run's inputs;
- a user's entry (one the marker does not list) whose name the run writes: it is named;
- a location that is not writable, or whose disk has less than `min_free_bytes` free.

`OutputDir` then builds the whole output set in one temporary folder beside the target, named with the process id.
When the block succeeds, the entries of the earlier output (those its marker lists) are moved out and the new ones in,
under a lock, the marker listing every entry of ours before any of them moves: whatever else the folder holds (a
user's notes, a model saved inside a data folder) stays. An error or Ctrl-C while they move puts the earlier entries
and marker back. A run that is killed leaves only its temporary folders (`.<name>.tmp-<pid>-...`,
`.<name>.old-<pid>-...`), which the next run into the same place removes, and a marker saying `"complete": false`,
which `finished_output` does not trust and the data loader and the scorer refuse (`check_finished`).

A marker written before markers listed their entries (commentrank 0.1) is read conservatively: its entries are the
names its kind writes (`LEGACY_ENTRIES`); anything else in the folder is kept.

    check_output_dir("outputs/data", "data_prep", inputs=["raw.jsonl"])   # before the long work
    with OutputDir("outputs/data", "data_prep") as tmp:
        dataset.save_to_disk(tmp / "listwise")
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from commentrank.io_utils import atomic_write_text

logger = logging.getLogger(__name__)

MARKER = ".commentrank-output.json"
_TMP, _OLD = ".tmp-", ".old-"
MIN_FREE_BYTES = 64 * 2**20  # the least free space an output location must have before any work
_LEFTOVER_INSIDE = re.compile(r"^\..+\.tmp-(\d+)-[^/]*$")  # atomic_write_text's temporary files: `.<name>.tmp-<pid>-`

MODEL_FILES = (  # the files (globs) a saved model is made of: what a cache, an export or a push holds
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
    "tokenizer*", "vocab.*", "merges.txt", "special_tokens_map.json", "added_tokens.json", "spiece.model",
    "sentencepiece.bpe.model", "chat_template.jinja", "README.md", "commentrank_config.json", "length_term.json",
)  # fmt: skip
_TRAINING_FILES = (
    *MODEL_FILES, "adapter_*", "adapter", "training_args.json", "training_args.bin", "*_results.json",
    "trainer_state.json", "data_summary.json", "checkpoint-*", "runs",
)  # fmt: skip
# The names (globs) each kind wrote before markers listed entries: what a re-run replaces in such a folder.
LEGACY_ENTRIES = {
    "data_prep": ("pairwise", "listwise", "sft", "summary.json", "prep_config.json"),
    "scores": ("predictions.jsonl", "metrics.json", "report.md", "ndcg_at_k.png"),
    "reward_model": _TRAINING_FILES,
    "sft_model": _TRAINING_FILES,
    "onnx_export": (*MODEL_FILES, "*.onnx", "*.onnx_data", "parity.md"),
    "hub_upload": MODEL_FILES,
    "smollm2_checkpoint": MODEL_FILES,
    "mpnet_model": MODEL_FILES,
}


class OutputDirError(ValueError):
    """An output path that commentrank must not write to; the message names it and says what to do."""


def read_marker(folder: str | os.PathLike) -> dict | None:
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def project_entries(folder: str | os.PathLike, marker: dict | None = None) -> set[str]:
    """The names in `folder` that commentrank wrote: those its marker lists (a marker without a list: the names its
    kind writes, `LEGACY_ENTRIES`). Nothing without a marker."""
    folder = Path(folder)
    marker = marker if marker is not None else read_marker(folder)
    if marker is None or not folder.is_dir():
        return set()
    present = {p.name for p in folder.iterdir()} - {MARKER}
    listed = marker.get("entries")
    if isinstance(listed, list):
        patterns = [str(p) for p in marker.get("entry_patterns") or ()]  # what a run writes as it goes: checkpoints
        return {name for name in present if name in set(map(str, listed)) or any(fnmatch.fnmatchcase(name, p)
                                                                                 for p in patterns)}  # fmt: skip
    patterns = LEGACY_ENTRIES.get(marker["kind"], ())
    return {name for name in present if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def _shown(names) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def check_writable(path: str | os.PathLike, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise `OutputDirError` unless `path` (or the folder that would hold it) takes a new file and its disk has
    `min_free_bytes` free: said before the work, not after it."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"output_dir {path} cannot be created: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise OutputDirError(f"output_dir {path} is not writable ({existing}: {err.strerror})") from None
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        raise OutputDirError(
            f"output_dir {path}: only {free / 2**20:.0f} MB free on its disk, about {min_free_bytes / 2**20:.0f} MB "
            "needed: free some space or choose another location"
        )


def check_output_dir(
    path: str | os.PathLike, kind: str, *, inputs=(), overwrite: bool = False, entries=(),
    min_free_bytes: int = MIN_FREE_BYTES,
) -> None:  # fmt: skip
    """Raise `OutputDirError` unless `path` may receive a `kind` output: absent, an empty folder, or an earlier
    commentrank output of the same kind (of any kind with `overwrite`); neither equal to, containing nor inside an
    input; none of the names in `entries` (what the run will write) taken by a user's entry; writable, with
    `min_free_bytes` free."""
    target = Path(path).resolve()
    for source in inputs:
        if source is None or not os.path.exists(source):  # a Hub id, or nothing that could be lost
            continue
        source_path = Path(source).resolve()
        if source_path == target or target in source_path.parents:
            raise OutputDirError(f"output_dir {path} is or contains the input {source}: choose another output folder")
        if source_path in target.parents:
            raise OutputDirError(f"output_dir {path} is inside the input {source}: choose a folder outside it")
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise OutputDirError(
                f"output_dir {path} is a file: commentrank writes a folder there, and replaces only folders it wrote "
                "itself; choose another path"
            )
        names = {p.name for p in target.iterdir()}
        if names:
            marker = read_marker(target)
            if marker is None:
                raise OutputDirError(
                    f"output_dir {path} holds files that commentrank did not write ({_shown(names)}): choose another "
                    "folder, or empty it"
                )
            if marker["kind"] != kind and not overwrite:
                raise OutputDirError(
                    f"output_dir {path} holds a commentrank {marker['kind']} output, not a {kind} output: choose "
                    "another folder, or pass --overwrite_output true to replace it"
                )
            taken = (names & set(entries)) - project_entries(target, marker)
            if taken:
                raise OutputDirError(
                    f"output_dir {path} holds {_shown(taken)}, which commentrank did not write and this run would "
                    "write: move it away, or choose another folder"
                )
    check_writable(path, min_free_bytes)


def write_marker(folder: str | os.PathLike, kind: str, entries=None, **fields) -> None:
    """The marker of `folder`: its `kind`, the `entries` commentrank wrote there, and any other `fields`."""
    from commentrank import __version__

    marker = {"kind": kind, "commentrank": __version__, **fields}
    if entries is not None:
        marker["entries"] = sorted(entries)
    atomic_write_text(Path(folder) / MARKER, json.dumps(marker, indent=1) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead(pid_text: str) -> bool:
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    return pid != os.getpid() and not _pid_alive(pid)


def clean_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove what killed commentrank runs left: the temporary folders beside `path` (`.<name>.tmp-<pid>-...`,
    `.<name>.old-<pid>-...`) and, in a folder with our marker, the temporary files of interrupted writes
    (`.<file>.tmp-<pid>-...`). Only names that carry the id of a process no longer running are removed."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for prefix in (_TMP, _OLD):
            for leftover in path.parent.glob(f".{path.name}{prefix}*"):
                if _dead(leftover.name[len(f".{path.name}{prefix}") :].split("-")[0]):
                    shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
                    removed.append(leftover)
    if path.is_dir() and read_marker(path) is not None:
        for leftover in path.iterdir():
            match = _LEFTOVER_INSIDE.match(leftover.name)
            if match and leftover.is_file() and _dead(match.group(1)):
                leftover.unlink()
                removed.append(leftover)
    if removed:
        logger.info(
            "removed %d leftover(s) of killed runs at %s: %s", len(removed), path, _shown(p.name for p in removed)
        )
    return removed


@contextlib.contextmanager
def locked(folder: str | os.PathLike):
    """An exclusive lock on `folder` (nothing is written there), held by one process at a time: while entries move in
    and out (two runs at once leave one whole set), or while a cache beside others in `folder` is checked and built."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def finished_output(folder: str | os.PathLike, kind: str, *required: str) -> bool:
    """Whether `folder` holds a whole `kind` output that may be used as it is: its marker names `kind`, does not say
    it is incomplete (a move in that did not finish), and lists the `required` entries (the weights), all present."""
    marker = read_marker(folder)
    if marker is None or marker["kind"] != kind or marker.get("complete") is False:
        return False
    return set(required) <= project_entries(folder, marker)


def check_finished(folder: str | os.PathLike) -> None:
    """Refuse to read a folder whose marker says a move in did not finish (a kill between two entries: some are new,
    some old or missing), naming what to run again; folders without a marker are not ours to judge."""
    marker = read_marker(folder)
    if marker is not None and marker.get("complete") is False:
        raise ValueError(
            f"{folder} is an unfinished {marker['kind']} output (a run was killed while moving its files in): run the "
            "command that writes it again into the same folder"
        )


def _marker_text(folder: Path) -> str | None:
    """The marker of `folder` as written (None: no marker), to be put back if a move fails."""
    try:
        return (folder / MARKER).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _put_back(target: Path, old: Path, marker_text: str | None, staging: Path | None = None, new=()) -> None:
    """Undo a move that failed midway: the `new` entries that reached `target` go back into `staging`, the entries
    moved out into `old` come back, and so does the marker `target` had (`marker_text`; None: it had none)."""
    for name in new:
        if os.path.lexists(target / name) and not os.path.lexists(staging / name):
            os.replace(target / name, staging / name)
    for entry in old.iterdir():
        os.replace(entry, target / entry.name)
    if marker_text is None:
        (target / MARKER).unlink(missing_ok=True)
    else:
        atomic_write_text(target / MARKER, marker_text)


def install_entries(staging: Path, target: Path, kind: str, *, replace_all: bool, overwrite: bool = False,
                    **fields) -> list[str]:  # fmt: skip
    """Move the entries of `staging` into `target` (created if absent) and list them in its marker, with `fields`.
    The earlier entries of ours that they replace (all of them with `replace_all`) are moved out first; a user's
    entries are never touched. The marker lists every entry of ours before any of them moves. A failure midway (an
    error, Ctrl-C) puts `target` back as it was, its earlier entries and marker included, and the new ones back into
    `staging`; only a kill leaves it half moved, its marker then saying `"complete": false`."""
    new = sorted(p.name for p in staging.iterdir() if p.name != MARKER)
    target.mkdir(parents=True, exist_ok=True)
    with locked(target):
        check_output_dir(target, kind, overwrite=overwrite, entries=new, min_free_bytes=0)
        marker, marker_text = read_marker(target), _marker_text(target)
        ours = project_entries(target, marker)
        remove = ours if replace_all else ours & set(new)
        before = {k: v for k, v in (marker or {}).items() if k not in ("kind", "commentrank", "entries", "complete")}
        old = target.with_name(f".{target.name}{_OLD}{os.getpid()}-{os.urandom(3).hex()}")
        old.mkdir()
        try:
            write_marker(target, kind, ours | set(new), **before, complete=False)
            for name in remove:
                os.replace(target / name, old / name)
            for name in new:
                os.replace(staging / name, target / name)
            write_marker(target, kind, (ours - remove) | set(new), **fields)
        except BaseException:
            _put_back(target, old, marker_text, staging, new)
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)
    return new


def remove_entries(target: str | os.PathLike) -> None:
    """Remove what commentrank wrote in `target` (the entries its marker lists), keeping everything else (and the
    marker, now listing nothing). A failure midway puts the entries and the marker back."""
    target = Path(target)
    with locked(target):
        marker, marker_text = read_marker(target), _marker_text(target)
        ours = project_entries(target, marker)
        old = target.with_name(f".{target.name}{_OLD}{os.getpid()}-{os.urandom(3).hex()}")
        old.mkdir()
        try:
            write_marker(target, marker["kind"], ours, complete=False)
            for name in ours:
                os.replace(target / name, old / name)
            write_marker(target, marker["kind"], ())
        except BaseException:
            _put_back(target, old, marker_text)
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)


class OutputDir:
    """A `kind` output set built in a temporary folder and moved into place only when the block succeeds.

    The target is checked first (`check_output_dir`, with `inputs`, `overwrite` and the `entries` the run will write),
    and checked again before the move in case something appeared there meanwhile. The earlier output's entries are
    replaced as a set; the folder's other entries stay.
    """

    def __init__(self, path: str | os.PathLike, kind: str, *, inputs=(), overwrite: bool = False, entries=()):
        self.path, self.kind, self.inputs, self.overwrite = Path(path), kind, tuple(inputs), overwrite
        self.entries = tuple(entries)

    def __enter__(self) -> Path:
        check_output_dir(self.path, self.kind, inputs=self.inputs, overwrite=self.overwrite, entries=self.entries)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(self.path)
        self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}{_TMP}{os.getpid()}-"))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                install_entries(self.tmp, self.path, self.kind, replace_all=True, overwrite=self.overwrite)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def claim_output_dir(path: str | os.PathLike, kind: str, *, inputs=(), overwrite: bool = False, extra_entries=(),
                     **fields) -> None:  # fmt: skip
    """For a run that writes into its folder as it goes (training: checkpoints, then the model): check it, then create
    it with the marker (the entries of ours it holds, plus `extra_entries`, the names the run will write in place;
    `fields`), so that the same command can resume there. Another kind's output (with `overwrite`) is removed first."""
    check_output_dir(path, kind, inputs=inputs, overwrite=overwrite, entries=extra_entries)
    Path(path).mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    marker = read_marker(path)
    if marker is not None and marker["kind"] != kind:
        remove_entries(path)
    write_marker(path, kind, project_entries(path) | set(extra_entries), **fields)
