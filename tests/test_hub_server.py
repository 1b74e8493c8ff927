"""The Hub download paths of the scripts against a real Hub-protocol server (olah, tests/hub_server.py): a reward model
and data_prep's views served as Hub repos score and train exactly as the same folders do locally.

Each script runs in a subprocess whose environment points HF_ENDPOINT at the local server, with the offline flags
unset and empty caches (`local_hub_env`), as a user's run against the Hub would; the local runs stay in this process.
"""

import json
import shutil

import datasets
import pytest
from hub_server import dataset_repo_files, prepared_dataset_files, run_script
from test_reward import args_for
from test_scoring import read_jsonl, tiny_model

from commentrank.configs import ENCODER_SETTINGS_FILE, EncoderSettings, PrepArguments
from commentrank.data.prepare import run_prepare

from conftest import SAMPLE, load_script

pytestmark = pytest.mark.xdist_group("hub_server")  # one worker runs them all: one server

TEMPLATE = "{title}\n\n{body}"  # not the default: the scorer must read it from the served settings
SETTINGS = EncoderSettings(max_length=40, truncation_side="left", prompt_template=TEMPLATE)  # nor these
SCORE_ARGS = ["--split", "test", "--n_seeds", "3", "--n_bootstrap", "0", "--no_progress", "true"]


@pytest.fixture(scope="module")
def served(local_hub, tmp_path_factory):
    """Served: `user/ds` (data_prep's views of 30 sample posts, built with TEMPLATE, laid out as --push_to_hub writes
    them), `user/listwise` (a plain dataset: its listwise rows pushed without a config), `user/rm` (a tiny reward
    model with SETTINGS in commentrank_config.json) and `user/rm-plain` (the same model without it). Returns the
    local folders they were made from."""
    root = tmp_path_factory.mktemp("served")
    data = root / "data"
    run_prepare(PrepArguments(inputs=[str(SAMPLE)], output_dir=str(data), skip_invalid=True, max_posts=30,
                              test_size=0.2, validation_size=0.2, prompt_template=TEMPLATE))  # fmt: skip
    local_hub.add_dataset("user/ds", prepared_dataset_files(data))
    listwise = datasets.load_from_disk(str(data / "listwise"))
    listwise.save_to_disk(str(root / "listwise"))  # its local twin
    local_hub.add_dataset("user/listwise", dataset_repo_files({"default": listwise}))
    plain = tiny_model(root / "rm-plain")
    model = root / "rm"
    shutil.copytree(plain, model)
    SETTINGS.save(model)
    local_hub.add_model("user/rm", model)
    local_hub.add_model("user/rm-plain", plain)
    return {"data": data, "listwise": root / "listwise", "model": model, "plain": plain}


def test_served_repos_answer_as_the_hub_does(served, local_hub):
    status, _, body = local_hub.get("/api/datasets/user/ds/revision/main")
    files = sorted(s["rfilename"] for s in json.loads(body)["siblings"])
    assert status == 200 and files == sorted(prepared_dataset_files(served["data"]))
    assert "listwise/test-00000-of-00001.parquet" in files and "prep_config.json" in files
    status, _, body = local_hub.get(f"/user/rm/resolve/main/{ENCODER_SETTINGS_FILE}")
    assert status == 200 and body == (served["model"] / ENCODER_SETTINGS_FILE).read_bytes()
    status, headers, _ = local_hub.get(f"/user/rm-plain/resolve/main/{ENCODER_SETTINGS_FILE}", method="HEAD")
    assert (status, headers.get("x-error-code")) == (404, "EntryNotFound")  # a missing file, as on the Hub
    status, headers, _ = local_hub.get("/api/datasets/user/nope/revision/main")
    assert (status, headers.get("x-error-code")) == (401, "RepoNotFound")  # a missing repo, as on the Hub
    assert json.loads(local_hub.get("/api/models/user/rm")[2])["sha"]  # *_info without a revision


def score_locally(model, dataset, out, *extra):
    load_script("score").main(["--model", str(model), "--dataset", str(dataset), "--output_dir", str(out),
                               *SCORE_ARGS, *extra])  # fmt: skip
    return read_jsonl(out / "predictions.jsonl"), json.loads((out / "metrics.json").read_text())


def score_from_hub(model, dataset, out, env, cwd):
    proc = run_script("score", "--model", model, "--dataset", dataset, "--output_dir", str(out), *SCORE_ARGS,
                      env=env, cwd=cwd)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, read_jsonl(out / "predictions.jsonl"), json.loads((out / "metrics.json").read_text())


def same_scores(hub_metrics, local_metrics):
    assert hub_metrics["results"] == local_metrics["results"]
    for key in ("split", "prompt_template", "n_posts", "n_comments", "n_truncated", "max_length", "skipped"):
        assert hub_metrics[key] == local_metrics[key], key


@pytest.mark.slow  # a script in a subprocess: over 10 s on 2 cores
def test_score_hub_model_on_hub_dataset_matches_the_local_folders(served, local_hub_env, tmp_path):
    proc, predictions, metrics = score_from_hub("user/rm", "user/ds", tmp_path / "hub", local_hub_env, tmp_path)
    local_predictions, local_metrics = score_locally(served["model"], served["data"], tmp_path / "local")
    assert predictions == local_predictions and len(predictions) == 6  # 20% of 30 posts
    same_scores(metrics, local_metrics)
    # the encoder settings are the served commentrank_config.json's (the CLI gave none; the defaults are 512, {title})
    assert metrics["max_length"] == SETTINGS.max_length and metrics["prompt_template"] == TEMPLATE
    assert metrics["n_truncated"] > 0 and "has no commentrank_config.json" not in proc.stderr
    # downloaded from the server into this test's own caches
    hub_cache = tmp_path / "hf_home" / "hub"
    assert [p.read_bytes() for p in hub_cache.glob(f"models--user--rm/snapshots/*/{ENCODER_SETTINGS_FILE}")] == [
        (served["model"] / ENCODER_SETTINGS_FILE).read_bytes()
    ]
    assert list(hub_cache.glob("datasets--user--ds/snapshots/*/listwise/test-00000-of-00001.parquet"))


@pytest.mark.slow  # a script in a subprocess: over 10 s on 2 cores
def test_reward_trains_on_a_hub_dataset_and_records_its_template(served, tiny_bert, local_hub_env, tmp_path):
    out = tmp_path / "rm"
    proc = run_script("reward", *args_for(tiny_bert, "user/ds", out, "--max_steps", "2", "--max_train_samples", "8",
                                          "--eval_strategy", "no", "--ndcg_eval_posts", "3"),
                      env=local_hub_env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    settings = EncoderSettings.load(out)
    assert settings.prompt_template == TEMPLATE and settings.max_length == 64
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["source"] == json.loads((served["data"] / "summary.json").read_text())  # the served summary.json
    assert summary["prompt_template"] == TEMPLATE and summary["train"]
    assert (tmp_path / "hf_home" / "hub" / "datasets--user--ds").is_dir()


@pytest.mark.slow  # a script in a subprocess: over 10 s on 2 cores
def test_hub_model_without_settings_scores_with_the_defaults(served, local_hub_env, tmp_path):
    hub_out = tmp_path / "hub"
    proc, predictions, metrics = score_from_hub("user/rm-plain", "user/listwise", hub_out, local_hub_env, tmp_path)
    # the server's 404 EntryNotFound for the missing file read as "no settings" (olah's offline 401 would crash)
    assert f"user/rm-plain has no {ENCODER_SETTINGS_FILE}: default encoder settings" in proc.stderr
    defaults = EncoderSettings()
    assert metrics["max_length"] == defaults.max_length and metrics["prompt_template"] == defaults.prompt_template
    local_predictions, local_metrics = score_locally(served["plain"], served["listwise"], tmp_path / "local")
    assert predictions == local_predictions
    same_scores(metrics, local_metrics)


@pytest.mark.parametrize(
    "model, dataset, message",
    [
        ("user/rm", "user/nope", "score: error: dataset not found: user/nope is neither a local file or folder nor a "
                                 "Hub dataset available"),
        ("user/nope", "user/ds", "score: error: model not found: user/nope"),
    ],
    ids=["missing_dataset", "missing_model"],
)  # fmt: skip
def test_missing_hub_repos_stop_with_a_clear_message(served, local_hub_env, tmp_path, model, dataset, message):
    proc = run_script("score", "--model", model, "--dataset", dataset, "--output_dir", str(tmp_path / "out"),
                      *SCORE_ARGS, env=local_hub_env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "predictions.jsonl").exists()
