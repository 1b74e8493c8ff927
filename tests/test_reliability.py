"""Bad input gets a clear error that names the file, line and field, or is skipped and counted; nothing is ever lost.

`BAD_INPUTS` is the table of the README's "Reliability" section: each row is one input given to data_prep (and, where
it says so, to scoring), with the message it must stop with, or the reason it is counted under with --skip_invalid.
"""

import gzip
import json
import os
import signal
import subprocess
import sys

import pytest
from test_scoring import cupit_rows, read_jsonl, tiny_model, write_jsonl

from commentrank import outputs
from commentrank.configs import PrepArguments
from commentrank.data.prepare import main as prepare_main
from commentrank.data.prepare import run_prepare
from commentrank.outputs import MARKER, OutputDir, OutputDirError

from conftest import ROOT, load_script

score = load_script("score").main


def good(i=0, n=3):
    return {"id": f"p{i}", "text": f"Question {i}?", "comments": [{"text": f"answer {j} of {i}", "score": j}
                                                                   for j in range(n)]}  # fmt: skip


def jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def mutated(change):
    row = good(1)
    change(row)
    return row


# name, file name, file bytes (a good post on line 1), error pattern, skip reason (None: the run stops either way)
BAD_INPUTS = [
    ("malformed JSON", "in.jsonl", jsonl(good(), b'{"text": "Q", "comments": ['),
     r"in.jsonl:2: field '<line>': malformed JSON", "malformed_json"),
    ("missing post text", "in.jsonl", jsonl(good(), mutated(lambda r: r.pop("text"))),
     r"in.jsonl:2: field 'text': missing", "missing_field"),
    ("missing comments", "in.jsonl", jsonl(good(), mutated(lambda r: r.pop("comments"))),
     r"in.jsonl:2: field 'comments': missing", "missing_field"),
    ("empty post text", "in.jsonl", jsonl(good(), mutated(lambda r: r.update(text="  "))),
     r"in.jsonl:2: field 'text': the post text is empty", "empty_post_text"),
    ("empty comment text", "in.jsonl", jsonl(good(), mutated(lambda r: r["comments"][1].update(text=""))),
     r"in.jsonl:2: field 'comments\[1\].text': the comment text is empty", "empty_comment_text"),
    ("tied scores", "in.jsonl", jsonl(good(), mutated(lambda r: r["comments"][1].update(score=0))),
     r"in.jsonl:2: field 'comments\[0\].score': score 0 is given to 2 comments \(a tie\)", "tied_scores"),
    ("null among scores", "in.jsonl", jsonl(good(), mutated(lambda r: r["comments"][2].update(score=None))),
     r"in.jsonl:2: field 'comments\[2\].score': null score", "mixed_labels"),
    ("wrong type", "in.jsonl", jsonl(good(), mutated(lambda r: r["comments"][0].update(score="1"))),
     r"in.jsonl:2: field 'comments\[0\].score': expected int/float, got str", "wrong_type"),
    ("score out of range", "in.jsonl", jsonl(good(), mutated(lambda r: r["comments"][0].update(score=7))),
     r"in.jsonl:2: field 'comments\[0\].score': score 7 is outside 0..2", "score_out_of_range"),
    ("duplicate comment text", "in.jsonl",
     jsonl(good(), mutated(lambda r: r["comments"][2].update(text="answer 0 of 1"))),
     r"in.jsonl:2: field 'comments\[2\].text': the same text as comments\[0\]", "duplicate_comment"),
    ("one comment", "in.jsonl", jsonl(good(), good(1, n=1)),
     r"in.jsonl:2: field 'comments': 1 comment\(s\), at least 2 needed", "too_few_comments"),
    ("non-UTF-8 bytes", "in.jsonl", jsonl(good(), b'{"text": "Caf\xe9?", "comments": []}'),
     r"in.jsonl:2: field '<line>': not valid UTF-8 \(byte 13\)", "not_utf8"),
    ("NUL byte", "in.jsonl", jsonl(good(), json.dumps(good(1)).encode().replace(b"Question", b"Quest\x00ion")),
     r"in.jsonl:2: field '<line>': malformed JSON", "malformed_json"),
    ("not an object", "in.jsonl", jsonl(good(), b"[1, 2]"),
     r"in.jsonl:2: field '<record>': expected a JSON object, got list", "wrong_type"),
    ("truncated .gz", "in.jsonl.gz", gzip.compress(jsonl(good(), good(1), good(2)))[:-12],
     r"in.jsonl.gz: the gzip file ends early \(truncated\) after line \d", None),
    ("malformed XML", "Posts.xml", b'<?xml version="1.0"?>\n<posts>\n  <row Id="1" PostTypeId="1" Title="Q"\n</posts>',
     r"Posts.xml:\d+: malformed XML", None),
    ("CSV without its columns", "t.csv", b"question,answer\nQ,A\n",
     r"t.csv: no 'comments' column for nested rows, and long-format rows need columns 'id', 'text', 'comment'", None),
    ("CSV row with an empty comment", "t.csv", b"id,text,comment,score\n1,Q,a,0\n1,Q,b,1\n2,Q2,,0\n2,Q2,c,1\n",
     r"t.csv:4: field 'comment': missing", "missing_field"),
]  # fmt: skip


@pytest.mark.parametrize("name, file_name, content, message, reason", BAD_INPUTS, ids=[r[0] for r in BAD_INPUTS])
def test_bad_input_stops_with_a_named_error_or_is_counted(name, file_name, content, message, reason, tmp_path):
    source = tmp_path / file_name
    source.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=f"^data_prep: error: .*{message}") as stop:
        prepare_main(["--inputs", str(source), "--output_dir", str(out)])
    assert " at at " not in str(stop.value) and not out.exists()
    assert source.read_bytes() == content  # the input is never touched
    if reason is None:
        return
    summary = run_prepare(PrepArguments(inputs=[str(source)], output_dir=str(out), skip_invalid=True, test_size=0,
                                        validation_size=0))  # fmt: skip
    assert summary.posts_dropped == {reason: 1} and summary.posts_kept >= 1
    assert summary.posts_read == summary.posts_kept + sum(summary.posts_dropped.values())
    assert summary.comments_read == summary.comments_kept + sum(summary.comments_dropped.values())


def test_comments_of_structurally_invalid_posts_are_counted(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [good(0), mutated(lambda r: r["comments"][0].update(score="x"))])
    summary = run_prepare(PrepArguments(inputs=[str(source)], output_dir=str(tmp_path / "out"), skip_invalid=True,
                                        test_size=0, validation_size=0))  # fmt: skip
    assert summary.comments_read == 6 and summary.comments_dropped == {"wrong_type": 3}


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing file", r"input file not found: .*nope.jsonl"),
        ("folder named .jsonl", r".*x.jsonl is a folder, not a CUP IT JSONL file"),
        ("Hub id while offline", r"me/not-here: not a local file or folder, and the Hub dataset is not available"),
        ("no output", r"no output: give --output_dir"),
    ],
)
def test_paths_that_are_not_inputs_get_a_named_error(case, message, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    inputs = {"missing file": str(tmp_path / "nope.jsonl"), "folder named .jsonl": str(tmp_path / "x.jsonl"),
              "Hub id while offline": "me/not-here",
              "no output": str(write_jsonl(tmp_path / "a.jsonl", [good()]))}  # fmt: skip
    (tmp_path / "x.jsonl").mkdir()
    argv = ["--inputs", inputs[case]] + ([] if case == "no output" else ["--output_dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=f"^data_prep: error: {message}"):
        prepare_main(argv)


def test_a_utf8_bom_and_an_upper_case_suffix_are_read(tmp_path):
    source = tmp_path / "IN.JSONL"
    source.write_bytes(b"\xef\xbb\xbf" + jsonl(good(0), good(1)))
    summary = run_prepare(PrepArguments(inputs=[str(source)], output_dir=str(tmp_path / "out"), test_size=0,
                                        validation_size=0))  # fmt: skip
    assert summary.posts_kept == 2 and not summary.posts_dropped
    csv = tmp_path / "t.csv"
    csv.write_bytes(b"\xef\xbb\xbfid,text,comment,score\n1,Q,a,0\n1,Q,b,1\n")
    summary = run_prepare(PrepArguments(inputs=[str(csv)], output_dir=str(tmp_path / "out2"), test_size=0,
                                        validation_size=0))  # fmt: skip
    assert summary.posts_kept == 1


# --------------------------------------------------------------------------------------------------------------------
# Output folders: never delete what commentrank did not write
# --------------------------------------------------------------------------------------------------------------------


def test_data_prep_never_replaces_its_input_or_a_foreign_folder(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [good(i) for i in range(5)])
    before = raw.read_bytes()
    for output_dir in (tmp_path, raw):  # the folder holding the input, and the input file itself
        with pytest.raises(SystemExit, match=r"is or contains the input .*raw.jsonl"):
            prepare_main(["--inputs", str(raw), "--output_dir", str(output_dir)])
    assert raw.read_bytes() == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match=r"mine holds files that commentrank did not write \(notes.txt\)"):
        prepare_main(["--inputs", str(raw), "--output_dir", str(foreign)])
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me too")
    with pytest.raises(SystemExit, match=r"a_file is a file"):
        prepare_main(["--inputs", str(raw), "--output_dir", str(a_file)])
    assert (foreign / "notes.txt").read_text() == "keep me" and a_file.read_text() == "keep me too"


def test_an_earlier_output_is_replaced_only_by_the_same_kind_of_run(tmp_path, monkeypatch):
    raw = write_jsonl(tmp_path / "raw.jsonl", [good(i) for i in range(5)])
    out = tmp_path / "out"
    prepare_main(["--inputs", str(raw), "--output_dir", str(out), "--test_size", "0", "--validation_size", "0"])
    assert json.loads((out / MARKER).read_text())["kind"] == "data_prep"
    prepare_main(["--inputs", str(raw), "--output_dir", str(out), "--test_size", "0", "--validation_size", "0"])
    model = tiny_model(tmp_path / "rm")
    with pytest.raises(SystemExit, match=r"out holds a commentrank data_prep output, not a scores output"):
        score(["--model", str(model), "--dataset", str(raw), "--output_dir", str(out), "--no_progress", "true"])
    assert (out / "listwise").is_dir()
    score(["--model", str(model), "--dataset", str(raw), "--output_dir", str(out), "--no_progress", "true",
           "--overwrite_output", "true"])  # fmt: skip
    assert not (out / "listwise").exists() and (out / "predictions.jsonl").is_file()


def test_score_checks_its_output_before_any_work(tmp_path, monkeypatch):
    raw = write_jsonl(tmp_path / "raw.jsonl", cupit_rows(3))
    a_file = tmp_path / "scores"
    a_file.write_text("not a folder")
    loaded = []
    script = load_script("score")  # its own names: what main() calls
    monkeypatch.setattr(script, "load_scorer", lambda *a, **k: loaded.append("model"))
    monkeypatch.setattr(script, "load_scoring_rows", lambda *a, **k: loaded.append("data"))
    with pytest.raises(SystemExit, match=r"^score: error: output_dir .*scores is a file"):
        script.main(["--model", str(tiny_model(tmp_path / "rm")), "--dataset", str(raw), "--output_dir", str(a_file)])
    assert loaded == []  # neither the model nor the data was read
    assert a_file.read_text() == "not a folder"


def test_an_output_set_lands_whole_and_leftovers_of_killed_runs_are_cleaned(tmp_path):
    out = tmp_path / "scores"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".scores.tmp-{dead.stdout.strip()}-abc"  # what a SIGKILL leaves
    leftover.mkdir()
    (leftover / "predictions.jsonl").write_text("half")
    with OutputDir(out, "scores") as first, OutputDir(out, "scores") as second:  # two runs into one folder at once
        assert first != second and first.parent == second.parent == tmp_path  # unique temporary names
        (first / "predictions.jsonl").write_text("run 1")
        (first / "metrics.json").write_text("run 1")
        (second / "predictions.jsonl").write_text("run 2")
        (second / "metrics.json").write_text("run 2")
    assert {p.read_text() for p in out.iterdir() if p.name != MARKER} == {"run 1"}  # one whole set, never mixed
    assert not leftover.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(RuntimeError), OutputDir(out, "scores") as tmp:  # a failing run leaves the old set intact
        (tmp / "predictions.jsonl").write_text("broken")
        raise RuntimeError("crash")
    assert (out / "predictions.jsonl").read_text() == "run 1"
    with pytest.raises(OutputDirError):
        OutputDir(out, "data_prep").__enter__()


def snapshot(folder) -> dict:
    """Every file under `folder` (its path inside it: its bytes), temporary and marker files included."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def ctrl_c_on_move(monkeypatch, n: int) -> None:
    """Ctrl-C instead of the `n`-th rename (a marker written, an entry moved); the renames before and after it run."""
    calls, replace = [], os.replace

    def interrupted(*args):
        calls.append(args)
        if len(calls) == n:
            raise KeyboardInterrupt
        return replace(*args)

    monkeypatch.setattr(outputs.os, "replace", interrupted)


def earlier_scores(tmp_path):
    """A finished scores output of ours, with a user's notes beside its entries."""
    out = tmp_path / "scores"
    with OutputDir(out, "scores") as tmp:
        (tmp / "predictions.jsonl").write_text("run 1")
        (tmp / "metrics.json").write_text("run 1")
    (out / "NOTES.md").write_text("my notes")
    return out


# renames: 1 the marker "complete": false, 2-3 the earlier entries out, 4-6 the new ones in, 7 the final marker
@pytest.mark.parametrize("n", [3, 5, 7])
def test_ctrl_c_while_an_output_moves_in_leaves_the_earlier_output_as_it_was(tmp_path, monkeypatch, n):
    out = earlier_scores(tmp_path)
    before = snapshot(tmp_path)
    ctrl_c_on_move(monkeypatch, n)
    with pytest.raises(KeyboardInterrupt), OutputDir(out, "scores") as tmp:
        for name in ("predictions.jsonl", "metrics.json", "report.md"):
            (tmp / name).write_text("run 2")
    assert snapshot(tmp_path) == before


def test_ctrl_c_while_an_output_is_removed_leaves_it_as_it_was(tmp_path, monkeypatch):
    out = earlier_scores(tmp_path)
    before = snapshot(tmp_path)
    ctrl_c_on_move(monkeypatch, 3)  # after the first entry moved out
    with pytest.raises(KeyboardInterrupt):
        outputs.remove_entries(out)
    assert snapshot(tmp_path) == before


def test_scoring_scores_every_comment_duplicates_included(tmp_path):
    rows = cupit_rows(3)
    rows[1]["comments"][2]["text"] = rows[1]["comments"][0]["text"]  # "+1" twice in one thread
    raw = write_jsonl(tmp_path / "test.jsonl", rows)
    result = score(["--model", str(tiny_model(tmp_path / "rm")), "--dataset", str(raw), "--output_dir",
                    str(tmp_path / "s"), "--no_progress", "true"])  # fmt: skip
    predictions = read_jsonl(tmp_path / "s" / "predictions.jsonl")
    assert [len(p["comments"]) for p in predictions] == [len(r["comments"]) for r in rows]
    assert result["duplicate_texts"] == 1 and result["n_posts"] == 3
    twins = predictions[1]["comments"]
    assert twins[0]["reward"] == pytest.approx(twins[2]["reward"]) and twins[0]["score"] != twins[2]["score"]


# --------------------------------------------------------------------------------------------------------------------
# Secrets, pickles, signals
# --------------------------------------------------------------------------------------------------------------------


def test_a_pickle_weights_file_is_refused_unless_allowed(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    model_dir = tiny_model(tmp_path / "rm")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    (model_dir / "model.safetensors").unlink()
    torch.save(model.state_dict(), model_dir / "pytorch_model.bin")
    raw = write_jsonl(tmp_path / "raw.jsonl", cupit_rows(2))
    argv = ["--model", str(model_dir), "--dataset", str(raw), "--output_dir", str(tmp_path / "s"), "--no_progress",
            "true"]  # fmt: skip
    with pytest.raises(SystemExit, match=r"holds pickle weights \(pytorch_model.bin\).*--allow_pickle_weights if"):
        score(argv)
    assert score([*argv, "--allow_pickle_weights", "true"])["n_posts"] == 2


def test_ctrl_c_while_data_prep_saves_stops_it_and_leaves_nothing(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [good(i) for i in range(400)])
    code = (
        "import os, signal, datasets, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # a shell's background job inherits it ignored
        "from commentrank.data.prepare import main\n"
        "save = datasets.DatasetDict.save_to_disk\n"
        "def interrupted(self, *a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return save(self, *a, **k)\n"
        "datasets.DatasetDict.save_to_disk = interrupted\n"
        f"main(['--inputs', {str(raw)!r}, '--output_dir', {str(tmp_path / 'out')!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "HF_DATASETS_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode in (130, -signal.SIGINT, 1) and "KeyboardInterrupt" in proc.stderr
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------------------------------------------------
# Training: resume after any kill, no token in any file
# --------------------------------------------------------------------------------------------------------------------


def test_resume_skips_a_half_written_checkpoint_and_finishes(tiny_bert, prepared_sample, tmp_path, caplog):
    import logging

    from test_reward import args_for

    reward = load_script("reward")
    out = tmp_path / "rm"
    argv = args_for(tiny_bert, prepared_sample, out, "--max_steps", "4", "--save_strategy", "steps", "--save_steps",
                    "2", "--ndcg_eval_posts", "0")  # fmt: skip
    reward.main(argv)
    # what a SIGKILL while checkpoint-4 is written leaves: its config and a 0-byte optimizer.pt, no trainer state
    half = out / "checkpoint-4"
    for path in half.iterdir():
        if path.name != "config.json":
            path.unlink()
    (half / "optimizer.pt").write_bytes(b"")
    marker = json.loads((out / MARKER).read_text())  # a kill while checkpoint-4 is written comes before the finish
    (out / MARKER).write_text(json.dumps({**marker, "finished": False}))
    with caplog.at_level(logging.WARNING):
        trainer = reward.main(argv)
    assert "skipping the incomplete checkpoint" in caplog.text and "checkpoint-4" in caplog.text
    assert trainer.state.global_step == 4 and json.loads((half / "trainer_state.json").read_text())["global_step"] == 4
    assert (half / "optimizer.pt").stat().st_size > 0


def test_no_token_in_any_file_a_training_run_writes(tiny_bert, prepared_sample, tmp_path):
    from test_reward import args_for

    from conftest import TOKEN

    out = tmp_path / "rm"
    load_script("reward").main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "2", "--save_strategy",
                                        "steps", "--save_steps", "1", "--hub_token", TOKEN))  # fmt: skip
    assert not list(out.rglob("training_args.bin"))  # the pickle that held the token
    assert json.loads((out / "checkpoint-1" / "training_args.json").read_text())["hub_token"] == "<HUB_TOKEN>"
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
