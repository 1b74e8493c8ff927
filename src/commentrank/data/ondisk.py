"""data_prep in bounded memory: the posts and the views go through files in a work folder, never all in memory.

The steps are those of `prepare.prepare_views`, with the same results byte for byte: the inputs are read and
validated as a stream (a Posts.xml in parallel, `stackexchange.read_posts_xml_bounded`) and each kept post is spooled
to Parquet, keeping in memory only its id, split key and whether it is labeled; the split is drawn from those keys
(`prepare.split_keys`); DuckDB sorts the spool into the views' order (spilling to disk); each post's rows
(`prepare.post_view_rows`) are staged in Arrow files, and `DatasetDict.save_to_disk` writes them in
`save_to_disk`'s own layout and batches (`datasets`' `ArrowWriter`), sharded by `max_shard_size`, one batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from commentrank.configs import PAIR_STRATEGIES, PrepArguments
from commentrank.data.records import Comment, RankedPost
from commentrank.data.validation import PrepSummary, ValidationRules, collect_posts

_BATCH_ROWS = 1000  # rows per staged batch (datasets' DEFAULT_MAX_BATCH_SIZE)
_SPOOL_BYTES = 32 << 20  # text per spooled batch of posts


def _spool_schema():
    import pyarrow as pa

    strings, ints = pa.list_(pa.string()), pa.list_(pa.int64())
    return pa.schema(
        [("i", pa.int64()), ("post_id", pa.string()), ("title", pa.string()), ("body", pa.string()),
         ("prompt", pa.string()), ("meta", pa.string()), ("texts", strings), ("ranks", ints), ("votes", ints),
         ("created", strings)]
    )  # fmt: skip


def _to_spool_row(i: int, post: RankedPost) -> dict:
    c = post.comments
    return {
        "i": i, "post_id": post.post_id, "title": post.title, "body": post.body, "prompt": post.prompt,
        "meta": json.dumps(post.meta), "texts": [x.text for x in c], "ranks": [x.rank for x in c],
        "votes": [x.votes for x in c], "created": [x.created for x in c],
    }  # fmt: skip


def _from_spool_row(row: dict) -> RankedPost:
    comments = [Comment(*fields) for fields in zip(row["texts"], row["ranks"], row["votes"], row["created"])]
    return RankedPost(row["post_id"], row["title"], comments, row["body"], json.loads(row["meta"]), row["prompt"])


class _BatchedWriter:
    """Rows to Parquet (the spool) in batches of bounded size."""

    def __init__(self, path: Path, schema):
        import pyarrow.parquet as pq

        self.schema, self.rows, self.size = schema, [], 0
        self.writer = pq.ParquetWriter(str(path), schema)

    def add(self, row: dict, size: int) -> None:
        self.rows.append(row)
        self.size += size
        if len(self.rows) >= _BATCH_ROWS or self.size >= _SPOOL_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
        self.rows, self.size = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


class _StagedSplit:
    """The rows of one view's split, staged as Arrow stream files of 1000-row batches. Each batch's types are
    inferred as `Dataset.from_list` infers them (a column of nulls only is of type null); a batch whose types differ
    from the open file's starts a new file, and `schema()` unifies them at the end."""

    def __init__(self, folder: Path, max_shard_size: str | int | None = None):
        self.max_shard_size = max_shard_size
        self.folder, self.rows, self.files, self.num_rows, self.nbytes = folder, [], [], 0, 0
        self.writer, self.file_schema = None, None
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, rows: list[dict]) -> None:
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

        schemas = [pa.ipc.open_stream(str(f)).schema for f in self.files]
        return pa.unify_schemas(schemas, promote_options="default")

    def batches(self, schema):
        import pyarrow as pa

        for path in self.files:
            with pa.ipc.open_stream(str(path)) as reader:
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


def _read_posts(config: PrepArguments, summary: PrepSummary, workdir: Path, spool: _BatchedWriter) -> list[tuple]:
    """Read and validate every input into the spool, as `prepare.load_posts` does; returns (post id, split key,
    labeled, comments) per post, in order."""
    from commentrank.data.readers import read_source

    if not config.inputs:
        raise ValueError("no inputs given (--inputs FILE [FILE ...])")
    kept: list[tuple] = []
    seen: set[str] = set()
    rules = ValidationRules(min_comments=config.min_comments)
    for n, source in enumerate(config.inputs):
        summary.sources.append(source)
        items = read_source(
            source, config.input_format, config.columns, config.hub_split,
            num_proc=config.num_proc, workdir=workdir / f"input-{n}",
        )  # fmt: skip
        for post in collect_posts(items, summary, config.skip_invalid, rules):
            if post.post_id in seen:
                post.post_id = f"{source}:{post.post_id}"
            seen.add(post.post_id)
            key = post.post_id if config.split_by == "post" else post.meta.get("site", "unknown")
            size = len(post.title) + len(post.body or "") + sum(len(c.text) for c in post.comments)
            spool.add(_to_spool_row(len(kept), post), size)
            kept.append((key, post.labeled, len(post.comments)))
    return kept


def prepare_views_on_disk(config: PrepArguments, workdir: str | Path) -> tuple[dict, PrepSummary]:
    """`prepare.prepare_views` in bounded memory: ({view: DatasetDict of staged splits}, summary), staged under
    `workdir`; `DatasetDict.save_to_disk` writes them as it writes datasets (`write_views`)."""
    import datasets
    import duckdb
    import pyarrow as pa

    from commentrank.data.prepare import post_view_rows, split_keys

    workdir = Path(workdir)
    summary = PrepSummary()
    spool = _BatchedWriter(workdir / "posts.parquet", _spool_schema())
    try:
        kept = _read_posts(config, summary, workdir, spool)
    finally:
        spool.close()
    if not kept:
        raise ValueError(f"no valid posts in {', '.join(config.inputs)}: {summary.to_json()}")
    keep = range(len(kept))
    if config.max_posts is not None and len(kept) > config.max_posts:  # as prepare.load_posts
        keep = set(random.Random(config.seed).sample(range(len(kept)), config.max_posts))
        summary.posts_dropped["over_max_posts"] += len(kept) - len(keep)
        summary.comments_dropped["over_max_posts"] += sum(c for i, (_, _, c) in enumerate(kept) if i not in keep)
        keep = sorted(keep)
    groups: dict[str, list[int]] = {}
    for i in keep:
        if kept[i][1]:
            groups.setdefault(kept[i][0], []).append(i)
    parts = split_keys(list(groups), config)
    order = {name: [i for k in part for i in groups[k]] for name, part in parts.items()}
    unlabeled = [i for i in keep if not kept[i][1]]
    if unlabeled:
        order["unlabeled"] = unlabeled
    del groups, kept
    names = list(order)
    positions = pa.table(
        {
            "i": pa.array([i for name in names for i in order[name]], pa.int64()),
            "split": pa.array([s for s, name in enumerate(names) for _ in order[name]], pa.int32()),
            "pos": pa.array([p for name in names for p in range(len(order[name]))], pa.int64()),
        }
    )
    del order
    staged = {view: datasets.DatasetDict() for view in config.views}  # of staged splits, saved by datasets' code
    counts = {s: {} for s in PAIR_STRATEGIES}
    settings = {"memory_limit": "512MB", "temp_directory": str(workdir / "duckdb.tmp"), "threads": config.num_proc}
    con = duckdb.connect(config=settings)
    try:
        con.register("positions", positions)
        spool_path = str(workdir / "posts.parquet").replace("'", "''")
        query = f"""SELECT p.split, s.* FROM read_parquet('{spool_path}') s JOIN positions p USING (i)
                    ORDER BY p.split, p.pos"""
        for batch in con.execute(query).fetch_record_batch(256):
            for row in batch.to_pylist():
                split = names[row["split"]]
                for view, rows in post_view_rows(_from_spool_row(row), config, counts).items():
                    if rows:
                        if split not in staged[view]:
                            staged[view][split] = _StagedSplit(workdir / "views" / view / split, config.max_shard_size)
                        staged[view][split].add(rows)
    finally:
        con.close()
    for splits in staged.values():
        for part in splits.values():
            part.close()
    summary.pairs = {f"{s}{' (selected)' if s == config.pair_strategy else ''}": c for s, c in counts.items()}
    summary.splits = {view: {split: part.num_rows for split, part in d.items()} for view, d in staged.items()}
    return {view: d for view, d in staged.items() if d}, summary
