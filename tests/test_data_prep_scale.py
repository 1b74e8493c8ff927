"""data_prep in bounded memory and in parallel gives what the in-memory path gives, byte for byte."""

import gzip
import json
import random
from pathlib import Path

import datasets
import pytest
from test_multi_source import write_source
from test_stackexchange import POSTS_XML, answer, question, row, write_dump

from commentrank.configs import PrepArguments
from commentrank.data.prepare import prepare_views, record_files, run_prepare, write_views
from commentrank.data.stackexchange import read_posts_xml, read_posts_xml_bounded

SAMPLE = Path(__file__).resolve().parents[1] / "data/stackexchange/se_ranked.jsonl.gz"


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a data_prep output but prep_config.json (it names the output folder), with the fingerprint
    taken out of each state.json (a cache key: a hash of the table in memory, of the shards on disk)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_dir() or name in ("prep_config.json", ".commentrank-output.json"):
            continue
        data = path.read_bytes()
        if path.name == "state.json":
            state = json.loads(data)
            assert len(state.pop("_fingerprint")) == 16
            data = json.dumps(state).encode()
        files[name] = data
    return files


def extra_sources(tmp_path) -> list[str]:
    """Posts with vote ties, with every vote tied, and a copy of the sample's first post under another id."""
    ties = write_source(tmp_path / "ties.jsonl", {"reddit.com/r/a": 30, "reddit.com/r/b": 12}, votes=(5, 5, 2))
    flat = write_source(tmp_path / "flat.jsonl", {"reddit.com/r/a": 6}, votes=(3, 3, 3), prefix="f")
    first = json.loads(gzip.open(SAMPLE, "rt").readline())
    (tmp_path / "dup.jsonl").write_text(json.dumps({**first, "id": "copy-of-the-first"}) + "\n")
    return [ties, flat, str(tmp_path / "dup.jsonl")]


SITES = ["--split_by", "site", "--validation_sites", "beer.stackexchange.com", "reddit.com/r/b",
         "--test_sites", "coffee.stackexchange.com", "cardano.stackexchange.com"]  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--pair_strategy", "all", "--visibility_filter", "--max_pairs_per_post", "3", "--prompt_template",
         "{title}\n\n{body}", "--max_posts", "400", "--sft_comments", "top_k", "--sft_top_k", "2"],
        [*SITES, "--max_train_posts_per_source", "120", "--vote_ties", "equal", "--max_posts", "900"],
        ["--vote_ties", "drop", "--max_train_posts_per_source", "20", "--max_posts", "600", "--test_size", "0.2"],
    ],
)  # fmt: skip
def test_bounded_run_gives_the_in_memory_views_byte_for_byte(tmp_path, options):
    inputs = [str(SAMPLE), str(POSTS_XML)] + (extra_sources(tmp_path) if "--vote_ties" in options else [])
    args = ["--inputs", *inputs, "--skip_invalid", *options]
    old = PrepArguments(**_parse(args + ["--output_dir", str(tmp_path / "old")]))
    dataset_dicts, summary = prepare_views(old)  # today's path: every post and row in memory
    write_views(old.output_dir, dataset_dicts, record_files(old, summary))
    run_prepare(PrepArguments(**_parse(args + ["--output_dir", str(tmp_path / "new"), "--num_proc", "2"])))
    old_files, new_files = folder_files(tmp_path / "old"), folder_files(tmp_path / "new")
    assert sorted(old_files) == sorted(new_files) and "listwise/train/data-00000-of-00001.arrow" in new_files
    assert [name for name in old_files if old_files[name] != new_files[name]] == []
    if "--vote_ties" in options:  # the options at work: their counts are in the summary both paths wrote
        counts = json.loads(new_files["summary.json"])
        dropped = "train_all_votes_tied" if "equal" in options else "train_vote_ties"
        assert {"duplicate_post", "train_over_source_cap", dropped} <= set(counts["posts_dropped"])
        assert counts["over_max_posts"]["posts"] > 0 and counts["warnings"] and counts["per_source"]
        assert "--validation_sites" not in options or set(counts["sites"]["test"]) == set(SITES[-2:])


def test_views_built_by_many_tasks_are_the_same(tmp_path, monkeypatch):
    """The views' rows are built by tasks of a few posts each, from many buckets, in 2 processes: the same files."""
    from commentrank.data import ondisk

    monkeypatch.setattr(ondisk, "_VIEW_TASK_POSTS", 7)
    monkeypatch.setattr(ondisk, "_SPOOL_BYTES", 50_000)
    args = ["--inputs", str(SAMPLE), "--skip_invalid", "--pair_strategy", "all", "--sft_comments", "top_k"]
    old = PrepArguments(**_parse(args + ["--output_dir", str(tmp_path / "old")]))
    dataset_dicts, summary = prepare_views(old)
    write_views(old.output_dir, dataset_dicts, record_files(old, summary))
    run_prepare(PrepArguments(**_parse(args + ["--output_dir", str(tmp_path / "new"), "--num_proc", "2"])))
    old_files, new_files = folder_files(tmp_path / "old"), folder_files(tmp_path / "new")
    assert sorted(old_files) == sorted(new_files)
    assert [name for name in old_files if old_files[name] != new_files[name]] == []


def _parse(args: list[str]) -> dict:
    from trl import TrlParser

    (config,) = TrlParser([PrepArguments]).parse_args_and_config(args)
    return {k: getattr(config, k) for k in config.__dataclass_fields__}


def tricky_dump(tmp_path) -> Path:
    """Answers before their question, to missing questions, with missing or wrong fields; other post types."""
    rows = [
        answer(20, 3, 4, "2015-01-09T00:00:00.000"),  # before its question
        question(1, ContentLicense="CC BY-SA 4.0"),
        answer(10, 1, 5, "2015-01-05T00:00:00.000"),
        row(Id=2, PostTypeId=5, Body="<p>a tag wiki</p>"),
        answer(11, 1, 9, "2015-01-06T00:00:00.000", body="<ul><li>one</li><li>two &amp; three</li></ul>"),
        answer(12, 99, 1, "2015-01-06T00:00:00.000"),  # its question is not in the file
        question(3),
        answer(13, 3, 4, "2015-01-07T00:00:00.000"),
        question(4, title=None),
        answer(14, 4, 1, "2015-01-07T00:00:00.000"),
        question(5),
        answer(15, 5, "many", "2015-01-07T00:00:00.000"),
        answer(16, 5, 2, "2015-01-07T00:00:00.000"),
        question(6),
        row(Id=7, PostTypeId=1, Title="no body"),
        answer(17, 7, 1, "2015-01-02T00:00:00.000"),
        answer(18, 7, 1, "2015-01-02T00:00:00.000"),
        row(PostTypeId=1, Title="no id", Body="x"),
        answer(19, 1, 0, "2015-01-01T00:00:00.000"),  # the last answer of question 1, far below it
    ]
    return write_dump(tmp_path, rows)


@pytest.mark.parametrize("num_proc", [1, 2])
def test_bounded_reader_yields_the_in_memory_readers_items(tmp_path, num_proc):
    path = tricky_dump(tmp_path)
    expected = list(read_posts_xml(path))
    for range_bytes in (200, 600, 1 << 20):  # ranges of a few rows each, cut at many places, and the whole file
        got = list(
            read_posts_xml_bounded(path, tmp_path / f"work-{range_bytes}", num_proc=num_proc, range_bytes=range_bytes)
        )
        assert got == expected
    assert [type(r).__name__ for _, r in expected].count("RankedPost") == 3


def test_posts_are_built_in_parallel_across_row_groups(tmp_path, monkeypatch):
    """The sorted rows are read by tasks of row groups in --num_proc processes: with row groups of 2 rows, a question
    and its answers span several groups and tasks, and the items are still the serial reader's, in its order."""
    import pyarrow.parquet as pq

    from commentrank.data import ondisk, stackexchange

    duckdb_sort = ondisk.duckdb_sort

    def sort_into_small_groups(*args, **kwargs):  # DuckDB's row groups are 2048 rows at least
        out = duckdb_sort(*args, **kwargs)
        pq.write_table(pq.read_table(out), out, row_group_size=2)
        return out

    monkeypatch.setattr(ondisk, "duckdb_sort", sort_into_small_groups)
    monkeypatch.setattr(stackexchange, "_GROUPS_PER_TASK", 1)
    path = tricky_dump(tmp_path)
    got = list(read_posts_xml_bounded(path, tmp_path / "work", num_proc=2))
    assert got == list(read_posts_xml(path))
    assert pq.ParquetFile(tmp_path / "work" / "sorted.parquet").num_row_groups > 3


def test_bounded_reader_names_the_line_of_malformed_xml(tmp_path):
    path = write_dump(tmp_path, [question(1), answer(2, 1, 1, "2015"), '  <row Id="3" PostTypeId="2"', question(4)])
    with pytest.raises(ValueError, match=r"Posts\.xml:\d+: malformed XML") as serial:
        list(read_posts_xml(path))
    with pytest.raises(ValueError, match=r"Posts\.xml:\d+: malformed XML") as parallel:
        list(read_posts_xml_bounded(path, tmp_path / "work", num_proc=2, range_bytes=100))
    assert str(parallel.value) == str(serial.value)


def test_rows_over_several_lines_are_read_whole(tmp_path):
    """A row split over lines cannot be parsed by pieces: the reader falls back to the whole file, same items."""
    text = question(1).replace(' Body="', '\n    Body="') + "\n" + answer(10, 1, 2, "2015") + "\n"
    path = write_dump(tmp_path, [text + answer(11, 1, 3, "2016"), question(2), answer(12, 2, 1, "2015")] * 20)
    expected = list(read_posts_xml(path))
    assert list(read_posts_xml_bounded(path, tmp_path / "work", num_proc=2, range_bytes=300)) == expected


def test_views_are_sharded_and_memory_mapped(tmp_path):
    out = tmp_path / "out"
    run_prepare(PrepArguments(inputs=[str(SAMPLE)], output_dir=str(out), skip_invalid=True, max_shard_size="300KB"))
    dataset_dicts, _ = prepare_views(PrepArguments(inputs=[str(SAMPLE)], skip_invalid=True))
    train = out / "pairwise" / "train"
    assert len(list(train.glob("data-*.arrow"))) > 1
    saved = datasets.load_from_disk(str(out / "pairwise"))
    assert saved["train"].cache_files  # memory-mapped, not loaded
    assert saved["train"].to_list() == dataset_dicts["pairwise"]["train"].to_list()


def test_saving_a_staged_split_keeps_its_rows_out_of_memory(tmp_path):
    """A staged split is copied to its shards in batches: the process's resident memory grows by about a batch, not
    by the split (the staged files were memory-mapped, and each page copied stayed resident: 600 MB at a 1 GB dump)."""
    import threading
    import time

    from commentrank.data.ondisk import _StagedSplit, save_staged_split

    def resident_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    staged = _StagedSplit(tmp_path / "stage")
    for k in range(100):  # 100 MB of text that does not compress
        staged.extend(
            [{"id": f"{k}-{j}", "text": random.Random(k * 1000 + j).randbytes(500).hex()} for j in range(1000)]
        )
    staged.close()
    before, peak, done = resident_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        save_staged_split(staged, tmp_path / "saved")
    finally:
        done.set()
        sampler.join()
    assert datasets.load_from_disk(str(tmp_path / "saved")).num_rows == 100_000
    assert peak[0] - before < 50, f"resident memory grew by {peak[0] - before:.0f} MB saving a 100 MB split"


def test_data_prep_imports_neither_torch_nor_trl_trainers(tmp_path):
    """A whole data_prep run (its command line included) never imports torch: that was 390 MB in the main process and
    in each forked worker before the first byte was read (TRL's RewardConfig came in through commentrank.configs)."""
    import subprocess
    import sys

    code = (
        "import sys; from commentrank.data.prepare import main; "
        f"main(['--inputs', {str(POSTS_XML)!r}, '--output_dir', {str(tmp_path / 'out')!r}, "
        f"'--num_proc', '2', '--skip_invalid']); "
        "heavy = [m for m in ('torch', 'transformers.training_args', 'trl.trainer') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert (tmp_path / "out" / "summary.json").exists()


def test_the_reward_config_defined_on_first_use_pickles_by_name():
    import pickle

    from commentrank import configs

    config = configs.ListwiseRewardConfig(output_dir="out", use_cpu=True, bf16=False, loss_type="listmle")
    copy = pickle.loads(pickle.dumps(config))
    assert type(copy) is configs.ListwiseRewardConfig and copy.loss_type == "listmle"
    assert "loss_type" in configs._TRAINER_OPTIONS and "learning_rate" not in configs._TRAINER_OPTIONS
