"""data_prep in bounded memory: the posts and the views go through files in a work folder, never all in memory.

`prepare.prepare_views` runs the same steps in both paths; with a work folder it keeps its posts and rows here
(`SpooledPosts`): the inputs are read and validated as a stream (a Posts.xml in parallel,
`stackexchange.read_posts_xml_bounded`) and each kept post is spooled to Parquet, while the split and the balancing
run on small `prepare.PostRef`s; a distribution sort reads the spool back in the splits' order; each post's rows
are staged in Arrow files, and `DatasetDict.save_to_disk` writes them in `save_to_disk`'s own layout and batches
(`datasets`' `ArrowWriter`), sharded by `max_shard_size`, one batch at a time: the same files byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path

from commentrank.configs import PrepArguments
from commentrank.data.records import Comment, RankedPost

_BATCH_ROWS = 1000  # rows per staged batch (datasets' DEFAULT_MAX_BATCH_SIZE)
_SPOOL_BYTES = 32 << 20  # text per spooled batch of posts


def _spool_schema():
    import pyarrow as pa

    return pa.schema([("i", pa.int64()), ("post", pa.binary())])


def _to_spool_row(i: int, post: RankedPost) -> dict:
    """A post as one pickled tuple (the spool is this run's own temporary file): as it was, meta included, and
    several times faster to write and read back than JSON."""
    comments = [(c.text, c.rank, c.votes, c.created) for c in post.comments]
    fields = (post.post_id, post.title, comments, post.body, post.meta, post.prompt)
    return {"i": i, "post": pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)}


def _from_spool_row(row: dict) -> RankedPost:
    post_id, title, comments, body, meta, prompt = pickle.loads(row["post"])
    return RankedPost(post_id, title, [Comment(*fields) for fields in comments], body, meta, prompt)


class _SpoolWriter:
    """Spooled posts (`_to_spool_row`) to an Arrow stream file in batches of bounded size, uncompressed: this run's
    own temporary file, written once and read once."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self.ids, self.posts, self.size, self.total = [], [], 0, 0
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_stream(self.sink, _spool_schema())

    def add(self, row: dict, size: int) -> None:
        self.ids.append(row["i"])
        self.posts.append(row["post"])
        self.size += size
        self.total += size
        if len(self.ids) >= _BATCH_ROWS or self.size >= _SPOOL_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.ids:
            columns = [pa.array(self.ids, pa.int64()), pa.array(self.posts, pa.binary())]
            self.writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=_spool_schema()))
        self.ids, self.posts, self.size = [], [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.sink.close()


class _StagedSplit:
    """The rows of one view's split, staged as Arrow stream files of 1000-row batches. Each batch's types are
    inferred as `Dataset.from_list` infers them (a column of nulls only is of type null); a batch whose types differ
    from the open file's starts a new file, and `schema()` unifies them at the end."""

    def __init__(self, folder: Path, max_shard_size: str | int | None = None):
        self.max_shard_size = max_shard_size
        self.folder, self.rows, self.files, self.num_rows, self.nbytes = folder, [], [], 0, 0
        self.writer, self.file_schema = None, None
        folder.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return self.num_rows + len(self.rows)

    def extend(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        while len(self.rows) >= _BATCH_ROWS:
            self._write(self.rows[:_BATCH_ROWS])
            self.rows = self.rows[_BATCH_ROWS:]

    def _write(self, rows: list[dict]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist(rows)
        if self.writer is not None and self.file_schema != table.schema:
            try:  # nulls only in a typed column: the file's type holds them
                table = table.cast(self.file_schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                self.writer.close()
                self.writer = None
        if self.writer is None:
            path = self.folder / f"stage-{len(self.files):05d}.arrow"
            self.files.append(path)
            self.writer = pa.ipc.new_stream(str(path), table.schema)
            self.file_schema = table.schema
        self.writer.write_table(table)
        self.num_rows += table.num_rows
        self.nbytes += table.nbytes

    def append_part(self, part: _StagedSplit) -> None:
        """Add the rows of another staged split (closed) after these (all staged: none waiting in memory)."""
        if self.rows or self.writer is not None:
            raise ValueError("append_part joins staged splits: this one holds rows of its own")
        self.files += part.files
        self.num_rows += part.num_rows
        self.nbytes += part.nbytes

    def close(self) -> None:
        if self.rows:
            self._write(self.rows)
            self.rows = []
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def save_to_disk(self, path: str, num_shards=None, max_shard_size=None, num_proc=None, storage_options=None):
        """Called by `DatasetDict.save_to_disk` for each split, as it calls `Dataset.save_to_disk`."""
        if num_shards is not None or storage_options:
            raise ValueError("a staged split is saved to a local folder, sharded by max_shard_size")
        save_staged_split(self, path, max_shard_size or self.max_shard_size)

    def schema(self):
        import pyarrow as pa

        schemas = []
        for path in self.files:
            with open_arrow_stream(path) as reader:
                schemas.append(reader.schema)
        return pa.unify_schemas(schemas, promote_options="default")

    def batches(self, schema):
        import pyarrow as pa

        for path in self.files:
            with open_arrow_stream(path) as reader:
                for batch in reader:
                    yield pa.Table.from_batches([batch]).cast(schema)


def _windows(tables, sizes: list[int], lookahead: int = _BATCH_ROWS):
    """Cut a stream of tables into consecutive one-chunk tables of the given row counts. Each one is a slice of an
    array that goes on past it (but the last), as `save_to_disk`'s batches are slices of the whole table: Arrow's IPC
    writer then cuts its buffers the same way (to 64-byte multiples), and the files are the same byte for byte."""
    import pyarrow as pa

    pending, have = [], 0
    tables = iter(tables)
    for size in sizes:
        while have < size + lookahead:
            table = next(tables, None)
            if table is None:
                break
            pending.append(table)
            have += table.num_rows
        joined = pa.concat_tables(pending).combine_chunks()
        yield joined.slice(0, size)
        rest = joined.slice(size)
        pending, have = ([rest] if rest.num_rows else []), rest.num_rows


def save_staged_split(staged: _StagedSplit, folder: str | Path, max_shard_size: str | int | None = None) -> None:
    """Write a staged split as `Dataset.save_to_disk` writes a dataset: the same shards (contiguous, `max_shard_size`
    each), the same 1000-row batches through `ArrowWriter`, `state.json` and `dataset_info.json`. The fingerprint in
    `state.json` is a hash of the shards (an in-memory dataset's is a hash of its table)."""
    import datasets
    from datasets import config as ds_config
    from datasets.arrow_writer import ArrowWriter, get_writer_batch_size_from_data_size
    from datasets.utils.py_utils import asdict, convert_file_size_to_int

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    schema = staged.schema()
    features = datasets.Features.from_arrow_schema(schema)
    n, nbytes = staged.num_rows, staged.nbytes
    num_shards = min(n, int(nbytes / convert_file_size_to_int(max_shard_size or ds_config.MAX_SHARD_SIZE)) + 1)
    batch = ds_config.DEFAULT_MAX_BATCH_SIZE
    if nbytes > 0:
        batch = min(batch, get_writer_batch_size_from_data_size(n, nbytes))
    div, mod = divmod(n, num_shards)
    sizes = []
    for index in range(num_shards):  # Dataset.shard(contiguous=True), then iter(batch) over each shard
        length = div + (index < mod)
        sizes += [batch] * (length // batch) + ([length % batch] if length % batch else [])
    shard_ends = [div * (k + 1) + min(k + 1, mod) for k in range(num_shards)]
    windows = _windows(staged.batches(schema), sizes)
    digest = hashlib.sha256()
    done = 0
    for index, end in enumerate(shard_ends):
        path = folder / f"data-{index:05d}-of-{num_shards:05d}.arrow"
        writer = ArrowWriter(features=features, path=str(path), embed_local_files=True)
        while done < end:
            table = next(windows)
            writer.write_table(table)
            done += table.num_rows
        writer.finalize()
        writer.close()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    release_memory()
    state = {
        "_fingerprint": digest.hexdigest()[:16], "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
        "_output_all_columns": False, "_split": None,
        "_data_files": [{"filename": f"data-{k:05d}-of-{num_shards:05d}.arrow"} for k in range(num_shards)],
    }  # fmt: skip
    with (folder / ds_config.DATASET_STATE_JSON_FILENAME).open("w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    info = asdict(datasets.DatasetInfo(features=features))
    with (folder / ds_config.DATASET_INFO_FILENAME).open("w", encoding="utf-8") as f:
        json.dump({key: info[key] for key in sorted(info)}, f, indent=2)


DUCKDB_MEMORY_LIMIT = "192MB"  # DuckDB's own memory (it spills to disk beyond), in a process of its own
_DUCKDB_CHILD = """import duckdb, json, sys
job = json.loads(sys.argv[1])
con = duckdb.connect(config=job["config"])
for statement in job["statements"]:
    con.execute(statement)
"""


def duckdb_sort(statements: list[str], query: str, out: Path, workdir: str | Path) -> Path:
    """Run `statements`, then write `query`'s rows, in its order, to the Parquet file `out`: in a fresh Python
    process that imports DuckDB alone (one thread: two ran out of `DUCKDB_MEMORY_LIMIT` at 1 GB; spilling to
    `workdir`), so that the memory DuckDB keeps is given back when it ends and data_prep's own process never holds it
    (it waits meanwhile)."""
    import subprocess
    import sys

    settings = {
        "memory_limit": DUCKDB_MEMORY_LIMIT,
        "threads": 1,
        "temp_directory": str(Path(workdir) / "duckdb.tmp"),
    }
    target = str(out).replace("'", "''")
    job = {
        "config": settings,
        "statements": [*statements, f"COPY ({query}) TO '{target}' (FORMAT parquet, ROW_GROUP_SIZE 8192)"],
    }
    proc = subprocess.run([sys.executable, "-c", _DUCKDB_CHILD, json.dumps(job)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"DuckDB failed sorting under {workdir}: {proc.stderr.strip()[-2000:]}")
    return Path(out)


def open_arrow_stream(path: str | Path):
    """A reader of an Arrow stream file through plain reads: opened by its name, pyarrow maps the file into memory,
    and every page that a copy touches stays in the process's resident memory until the file is closed (the whole
    staged split, 600 MB at a 1 GB dump)."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.OSFile(str(path)))


def release_memory() -> None:
    """Give the memory that Arrow's pool and malloc keep after a stage back to the system (the peak is what counts)."""
    import ctypes
    import ctypes.util

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)


_VIEW_TASK_POSTS = 2000  # posts per task of the views' building


def _stage_view_rows(task: tuple) -> tuple[dict, dict]:
    """`prepare.view_parts` of the posts at output places [first, last) of one bucket file, each view's split staged
    in a folder of this task (only the staged files' names and counts go back)."""
    import pyarrow.compute as pc

    from commentrank.data.prepare import view_parts

    path, first, last, ends, names, config, folder = task
    with open_arrow_stream(path) as reader:
        table = reader.read_all()
    places = table.column("place")
    table = table.filter(pc.and_(pc.greater_equal(places, first), pc.less(places, last)))
    table = table.take(pc.sort_indices(table, [("place", "ascending")]))
    runs = groupby(table.to_pylist(), key=lambda row: bisect_right(ends, row["place"]))
    pairs = ((names[split], (_from_spool_row(row) for row in group)) for split, group in runs)
    views, counts = view_parts(pairs, config, lambda view, split: _StagedSplit(Path(folder) / view / split))
    for parts in views.values():
        for part in parts.values():
            part.close()
    return views, counts


def process_pool(num_proc: int):
    """A pool of `num_proc` processes, forked where the system can (no re-import of the caller's main script)."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(num_proc)


def ordered_map(function, tasks: list, num_proc: int) -> Iterator:
    """`function` of each task, in the tasks' order, `num_proc` processes at once; at most `num_proc` results wait
    for the caller at a time (Pool.imap would run ahead and hold them all)."""
    if num_proc <= 1 or len(tasks) <= 1:
        yield from map(function, tasks)
        return
    with process_pool(num_proc) as pool:
        pending = deque()
        for task in tasks:
            pending.append(pool.apply_async(function, (task,)))
            if len(pending) > num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class SpooledPosts:
    """The posts and the views' rows of `prepare.prepare_views` in bounded memory, under `workdir`: each post spooled
    to an Arrow stream as it is read (`add`); the views' rows built from them in the splits' order (`view_parts`);
    each view's split staged in Arrow files (`new_split`), that `DatasetDict.save_to_disk` writes."""

    def __init__(self, workdir: str | Path, config: PrepArguments):
        self.workdir, self.config, self.n = Path(workdir), config, 0
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.spool = _SpoolWriter(self.workdir / "posts.arrow")

    def add(self, post: RankedPost) -> None:
        size = len(post.title) + len(post.body or "") + sum(len(c.text) for c in post.comments)
        self.spool.add(_to_spool_row(self.n, post), size)
        self.n += 1

    def close(self) -> None:
        self.spool.close()

    def view_parts(self, splits: dict[str, list], config: PrepArguments) -> tuple[dict, dict]:
        """`prepare.view_parts` of the posts of `splits` ({split: `prepare.PostRef`s}), in their order, staged on disk
        by tasks in `config.num_proc` processes: the spool is read once into bucket files of consecutive output
        places (~`_SPOOL_BYTES` of text each); each task sorts the posts of its places of one bucket in memory and
        stages their rows (a bucket file goes once its last task is done); the parts are joined in their order."""
        import numpy as np
        import pyarrow as pa

        from commentrank.data.prepare import merge_view_parts

        release_memory()  # what the reading (Arrow) kept
        place = np.full(self.n, -1, dtype=np.int64)  # each spooled post's place in the output, -1: in no split
        ends, start = [], 0
        for refs in splits.values():
            place[np.fromiter((r.index for r in refs), np.int64, len(refs))] = np.arange(
                start, start + len(refs), dtype=np.int64
            )
            start += len(refs)
            ends.append(start)
        per_bucket = max(1, int(start * _SPOOL_BYTES / max(1, self.spool.total)))
        buckets: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        folder = self.workdir / "buckets"
        folder.mkdir(exist_ok=True)
        schema = _spool_schema().append(pa.field("place", pa.int64()))
        with open_arrow_stream(self.workdir / "posts.arrow") as spool:
            for batch in spool:
                where = place[batch.column("i").to_numpy()]
                batch = pa.RecordBatch.from_arrays([*batch.columns, pa.array(where)], schema=schema)
                bucket = np.where(where >= 0, where // per_bucket, -1)
                for k in np.unique(bucket[bucket >= 0]).tolist():
                    if k not in buckets:
                        buckets[k] = pa.ipc.new_stream(str(folder / f"{k:06d}.arrow"), schema)
                    buckets[k].write_batch(batch.filter(pa.array(bucket == k)))
        for writer in buckets.values():
            writer.close()
        del place
        tasks = []
        for k in sorted(buckets):
            low, high = k * per_bucket, min((k + 1) * per_bucket, start)
            for first in range(low, high, _VIEW_TASK_POSTS):
                last = min(first + _VIEW_TASK_POSTS, high)
                staged = str(self.workdir / "views" / f"part-{len(tasks):06d}")
                tasks.append((str(folder / f"{k:06d}.arrow"), first, last, ends, list(splits), config, staged))

        def parts():
            for n, part in enumerate(ordered_map(_stage_view_rows, tasks, config.num_proc)):
                yield part
                if n + 1 == len(tasks) or tasks[n + 1][0] != tasks[n][0]:  # the bucket's last task is done
                    Path(tasks[n][0]).unlink()

        return merge_view_parts(parts(), config, self.new_split)

    def new_split(self, view: str, split: str) -> _StagedSplit:
        return _StagedSplit(self.workdir / "views" / view / split, self.config.max_shard_size)

    @staticmethod
    def dataset_dicts(views: dict) -> dict:
        import datasets

        for splits in views.values():
            for part in splits.values():
                part.close()
        return {view: datasets.DatasetDict(splits) for view, splits in views.items() if splits}
