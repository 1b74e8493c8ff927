"""Arguments, recipes and the Hub: every bad flag, recipe key or value, and every Hub failure stops a script with ONE
line naming the flag or key (the allowed values; for a typo, the closest name), exit code 2 for usage errors and 1
for bad input, never a traceback (`--debug` or COMMENTRANK_DEBUG=1 shows it). Each test is a row of the README's
"Arguments, recipes and the Hub" table."""

import io
import json
import os
import re
import subprocess
import sys

import pytest
from test_scoring import cupit_rows, tiny_model, write_jsonl

from conftest import ROOT, TOKEN, load_script, single_final_upload

CPU = ["--use_cpu", "true", "--bf16", "false"]  # TRL's configs refuse their bf16 default on machines without it
SCRIPTS = ["reward", "sft", "score", "rank", "export", "baselines", "convert_smollm2", "grpo", "best_of_n"]


def main_of(name: str):
    return load_script("prepare", "data_prep").main if name == "prepare" else load_script(name).main


def stops(name: str, argv: list[str], capsys) -> tuple[int, str]:
    """Run a script's main(argv), which must stop: (exit code, its stderr), after checking the error is one line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main_of(name)(argv)
    err = capsys.readouterr().err
    code = stop.value.code
    if isinstance(code, str):  # SystemExit("message"): Python prints it and exits with 1
        err, code = err + code + "\n", 1
    lines = [line for line in err.splitlines() if line.strip() and not re.match(r"(\S+ \S+ )?(INFO|WARNING) ", line)]
    assert len(lines) == 1 and lines[0].startswith(f"{'data_prep' if name == 'prepare' else name}: error: "), err
    return code, lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny-rm"))


@pytest.fixture
def raw(tmp_path):
    return str(write_jsonl(tmp_path / "raw.jsonl", cupit_rows(3)))


def score_args(model, dataset, out, *extra):
    return ["--model", str(model), "--dataset", str(dataset), "--output_dir", str(out), "--no_progress", "true",
            "--n_bootstrap", "0", *extra]  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# --help
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["prepare", *SCRIPTS])
def test_help_of_every_script_exits_0(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main_of(name)(["--help"])
    assert stop.value.code in (0, None)
    out = capsys.readouterr().out
    assert "--debug" in out and "usage:" in out


# --------------------------------------------------------------------------------------------------------------------
# Unknown flags and recipe keys, typos in choices
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("score", ["--model", "m", "--dataset", "d", "--output_dir", "o", "--max_psots", "3"],
         "unknown flag --max_psots (did you mean --max_posts?)"),
        ("reward", ["--dataset_name", "d", "--output_dir", "o", *CPU, "--los_type", "listmle"],
         "unknown flag --los_type (did you mean --loss_type?)"),
        ("baselines", ["--dataset", "d", "--splt", "test"], "unknown flag --splt (did you mean --split?)"),
        ("rank", ["--model", "m", "--jsno"], "unknown flag --jsno (did you mean --json?)"),
        ("score", ["--model", "m", "--dataset", "d", "--output_dir", "o", "--max_post", "3"],
         "unknown flag --max_post (did you mean --max_posts?)"),  # a prefix was taken as the flag it begins
        ("baselines", ["--dataset", "d", "--n_seed", "3"], "unknown flag --n_seed (did you mean --n_seeds?)"),
    ],
    ids=["score", "reward", "baselines", "rank", "score_prefix", "baselines_prefix"],
)  # fmt: skip
def test_an_unknown_flag_names_the_closest_one(name, argv, message, capsys):
    assert stops(name, argv, capsys) == (2, f"{name}: error: {message}")


def test_an_unknown_recipe_key_names_its_line_and_the_closest_key(tmp_path, capsys):
    recipe = tmp_path / "reward.yaml"
    recipe.write_text("dataset_name: d\noutput_dir: o\nloss_typ: listmle\n")
    code, line = stops("reward", ["--config", str(recipe)], capsys)
    assert (code, line) == (2, f"reward: error: {recipe}:3: unknown key 'loss_typ' (did you mean 'loss_type'?)")


DTYPE_TYPO = "dtype 'float31' is not one of auto, float32, bfloat16, float16 (did you mean 'float32'?)"


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("reward", ["--dataset_name", "d", "--output_dir", "o", "--loss_type", "listmel"],
         "loss_type 'listmel' is not one of pairwise, pairwise_all, listmle, plistmle, listnet, lambdaloss "
         "(did you mean 'listmle'?)"),
        ("prepare", ["--inputs", "x.jsonl", "--pair_strategy", "best_vs_test"],
         "pair_strategy 'best_vs_test' is not one of adjacent, all, best_vs_rest (did you mean 'best_vs_rest'?)"),
        ("prepare", ["--inputs", "x.jsonl", "--views", "pairwise", "listwse"],
         "views: 'listwse' is not one of pairwise, listwise, sft (did you mean 'listwise'?)"),
        ("reward", ["--dataset_name", "d", "--output_dir", "o", "--eval_strategy", "step"],
         "argument --eval_strategy/--eval-strategy: invalid choice: 'step' (choose from 'no', 'steps', 'epoch') "
         "(did you mean 'steps'?)"),
        ("score", ["--model", "m", "--dataset", "d", "--output_dir", "o", "--dtype", "float31"], DTYPE_TYPO),
        ("rank", ["--model", "m", "--dtype", "float31"], DTYPE_TYPO),
    ],
    ids=["loss_type", "pair_strategy", "views", "eval_strategy", "score_dtype", "rank_dtype"],
)  # fmt: skip
def test_a_typo_in_a_choice_names_the_allowed_values_and_the_closest(name, argv, message, capsys):
    prog = "data_prep" if name == "prepare" else name
    assert stops(name, argv, capsys) == (2, f"{prog}: error: {message}")


def test_a_missing_recipe_is_named(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert stops("reward", ["--config", str(missing)], capsys) == (
        2, f"reward: error: --config {missing}: cannot read it (No such file or directory)"
    )  # fmt: skip


def test_a_broken_recipe_names_its_line(tmp_path, capsys):
    recipe = tmp_path / "data.yaml"
    recipe.write_text("inputs:\n  - a.jsonl\ntest_size: [0.1\nseed: 3\n")
    code, line = stops("prepare", ["--config", str(recipe)], capsys)
    assert code == 2 and line.startswith(f"data_prep: error: --config {recipe}:4: not valid YAML (")


@pytest.mark.parametrize("name", ["prepare", "score"])
def test_an_unknown_prompt_placeholder_names_the_allowed_ones(name, capsys):
    argv = ["--inputs", "x.jsonl"] if name == "prepare" else ["--model", "m", "--dataset", "d", "--output_dir", "o"]
    code, line = stops(name, [*argv, "--prompt_template", "{titel}\n\n{body}"], capsys)
    assert code == 2 and line.endswith(
        "prompt_template: unknown placeholder {titel} (the placeholders are {title} and {body}; did you mean {title}?)"
    )


# --------------------------------------------------------------------------------------------------------------------
# Values out of range
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("score", ["--model", "m", "--dataset", "d", "--output_dir", "o", "--batch_size", "0"],
         "batch_size must be at least 1, got 0"),
        ("reward", ["--dataset_name", "d", "--output_dir", "o", *CPU, "--per_device_train_batch_size", "-2"],
         "per_device_train_batch_size must be at least 1, got -2"),
        ("rank", ["--model", "m", "--batch_size", "0"], "batch_size must be at least 1, got 0"),
        ("prepare", ["--inputs", "x.jsonl", "--test_size", "-0.2"],
         "test_size must be a fraction in [0, 1) or a count >= 1, got -0.2"),
        ("score", ["--model", "m", "--dataset", "d", "--output_dir", "o", "--max_posts", "-1"],
         "max_posts must be at least 1, got -1"),
        ("reward", ["--dataset_name", "d", "--output_dir", "o", *CPU, "--max_length", "0"],
         "max_length must be at least 1, got 0"),
        ("baselines", ["--dataset", "d", "--n_seeds", "0"], "n_seeds must be at least 1, got 0"),
        ("best_of_n", ["--reward_model", "m", "--n_bootstrap", "-1"], "n_bootstrap must be at least 0, got -1"),
    ],
    ids=["score_batch_size", "reward_batch_size", "rank_batch_size", "test_size", "max_posts", "max_length",
         "baselines_n_seeds", "best_of_n_n_bootstrap"],
)  # fmt: skip
def test_a_value_out_of_range_is_a_usage_error(name, argv, message, capsys):
    prog = "data_prep" if name == "prepare" else name
    assert stops(name, argv, capsys) == (2, f"{prog}: error: {message}")


@pytest.mark.parametrize(("name", "model", "expected", "message"), [
    ("reward", None, 2, "give --model_name_or_path: a model folder, a Hub id or a bundled model (bundled:minilm"),
    ("sft", "bundled:minlm", 2, "unknown bundled model 'bundled:minlm' (did you mean 'bundled:minilm'?)"),
    ("reward", "/no/such/model", 1, "model not found: /no/such/model (no such folder, and not a Hub model id)"),
    ("sft", "./no/such/model", 1, "model not found: ./no/such/model (no such folder, and not a Hub model id)"),
])  # fmt: skip
def test_a_model_that_cannot_be_is_one_line_before_any_work(name, model, expected, message, capsys):
    argv = ["--dataset_name", "d", "--output_dir", "o", *CPU, *(["--model_name_or_path", model] if model else [])]
    code, line = stops(name, argv, capsys)
    assert code == expected and message in line


def test_evaluation_without_a_validation_split_is_a_usage_error(tiny_bert, prepared_sample, tmp_path, capsys):
    from test_reward import args_for

    argv = args_for(tiny_bert, prepared_sample, tmp_path / "rm", "--eval_strategy", "steps", "--eval_steps", "1",
                    "--dataset_test_split", "dev")  # fmt: skip
    code, line = stops("reward", argv, capsys)
    assert code == 2 and line.startswith("reward: error: --eval_strategy steps evaluates on split 'dev' (")
    assert "which the dataset does not have (its splits: test, train, validation)" in line
    assert not (tmp_path / "rm").exists()


@pytest.mark.parametrize("name", ["score", "rank"])
def test_cuda_without_cuda_is_a_usage_error(name, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--model", "m", "--device", "cuda:1"]
    argv += ["--dataset", "d", "--output_dir", "o"] if name == "score" else []
    assert stops(name, argv, capsys) == (
        2, f"{name}: error: device 'cuda:1': CUDA is not available on this machine (use auto or cpu)"
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Bad input: nesting, encodings, pickle weights
# --------------------------------------------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def test_a_json_line_nested_too_deep_is_named_or_counted(tmp_path, capsys):
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    rows = cupit_rows(12)
    path = tmp_path / "deep.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]) + DEEP + "\n"
                    + "".join(json.dumps(r) + "\n" for r in rows[3:]))  # fmt: skip
    code, line = stops("prepare", ["--inputs", str(path), "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 1 and f"{path}:4: field '<line>': malformed JSON: nested too deeply" in line
    summary = run_prepare(PrepArguments(inputs=[str(path)], output_dir=str(tmp_path / "ok"), skip_invalid=True,
                                        test_size=2, validation_size=2))  # fmt: skip
    assert summary.posts_dropped["malformed_json"] == 1


@pytest.mark.parametrize(
    "stdin, message",
    [(b'{"text": "Q", "comments": ["a\xff"]}', "stdin: not valid UTF-8 (byte 0xff at position 29)"),
     (DEEP.encode(), "stdin: not valid JSON (nested too deeply)")],
    ids=["utf8", "deep"],
)  # fmt: skip
def test_bad_bytes_on_rank_stdin_are_one_line(stdin, message, model_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    assert stops("rank", ["--model", str(model_dir)], capsys) == (1, f"rank: error: {message}")


@pytest.fixture(scope="module")
def pickle_model(tmp_path_factory):
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = tiny_model(tmp_path_factory.mktemp("pickle-rm"))
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("flag", [["--allow_pickle_weights"], ["--allow_pickle_weights", "true"]])
def test_rank_takes_the_pickle_advice_it_gives(flag, pickle_model, tmp_path, monkeypatch, capsys):
    post = tmp_path / "post.json"
    post.write_text(json.dumps({"text": "Q?", "comments": ["one", "two words"]}))
    code, line = stops("rank", ["--model", str(pickle_model), str(post)], capsys)
    assert code == 1 and "holds pickle weights" in line and "pass --allow_pickle_weights if you trust" in line
    rows = main_of("rank")(["--model", str(pickle_model), *flag, str(post)])
    assert len(rows) == 2


@pytest.mark.parametrize("name", ["reward", "score", "rank", "export", "sft", "grpo", "best_of_n"])
def test_every_script_that_loads_a_model_takes_allow_pickle_weights(name, capsys):
    with pytest.raises(SystemExit):
        main_of(name)(["--help"])
    assert "--allow_pickle_weights" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------------------
# The Hub
# --------------------------------------------------------------------------------------------------------------------


def test_a_hub_model_offline_in_reward_is_one_line(prepared_sample, tmp_path, monkeypatch, capsys):
    from test_reward import args_for

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, line = stops("reward", args_for("someone/not-cached-model", prepared_sample, tmp_path / "rm"), capsys)
    assert code == 1 and line.startswith(
        "reward: error: model not found: someone/not-cached-model is neither a local folder nor a Hub model that "
        "could be reached ("
    )


def test_the_training_push_uses_hub_token(tiny_bert, prepared_sample, tmp_path, fake_hub, monkeypatch):
    from test_reward import args_for

    monkeypatch.delenv("HF_TOKEN")
    main_of("reward")(args_for(tiny_bert, prepared_sample, tmp_path / "rm", "--max_steps", "1", "--ndcg_eval_posts",
                               "0", "--push_to_hub", "true", "--hub_model_id", "me/rm",
                               "--hub_token", TOKEN))  # fmt: skip
    assert [c[2].get("token") for c in fake_hub if c[0] == "init"] == [TOKEN]
    assert [c[0] for c in fake_hub] == ["init", "create_repo", "upload_folder"]


def test_a_training_push_without_a_token_stops_before_any_work(tiny_bert, prepared_sample, tmp_path, monkeypatch,
                                                               capsys):  # fmt: skip
    """The token was looked for only after training: a whole run spent, then a push that could not be."""
    import huggingface_hub
    from test_reward import args_for

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    out = tmp_path / "rm"
    code, line = stops("reward", args_for(tiny_bert, prepared_sample, out, "--max_steps", "1", "--push_to_hub",
                                          "true", "--hub_model_id", "me/rm"), capsys)  # fmt: skip
    assert code == 1 and "cannot push to the Hub repo me/rm: no Hugging Face token" in line and "--hub_token" in line
    assert not out.exists()


def test_a_finished_run_rerun_with_a_push_pushes_it(tiny_bert, prepared_sample, tmp_path, fake_hub):
    """A push that failed at the end is retried by running the same command again (it found the run finished and
    did nothing, pushing nothing)."""
    from test_reward import args_for

    argv = args_for(tiny_bert, prepared_sample, tmp_path / "rm", "--max_steps", "1", "--ndcg_eval_posts", "0")
    main_of("reward")(argv)
    assert fake_hub == []
    main_of("reward")([*argv, "--push_to_hub", "true", "--hub_model_id", "me/rm"])
    assert "config.json" in single_final_upload(fake_hub, "me/rm")


def test_the_push_error_of_a_script_without_hub_token_names_no_such_flag(model_dir, tmp_path, monkeypatch):
    import huggingface_hub

    from commentrank.hub import HubError, push_model_folder

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubError, match=r"\(log in with `hf auth login` or set HF_TOKEN\)$"):
        push_model_folder(model_dir, "me/x")  # score.py's push: it has no --hub_token


@pytest.mark.parametrize("argv", [["--hub=" + TOKEN], ["--dataset_name", "x", TOKEN]])
def test_a_token_in_a_bad_command_line_is_never_echoed(argv, capsys):
    """An abbreviated `--hub=<token>` (argparse's "ambiguous option" repeats the argument) or a token pasted without
    its flag: the one-line error names the problem, not the value."""
    code, line = stops("reward", argv, capsys)
    assert code == 2 and TOKEN not in line and TOKEN[3:] not in line, line


def test_an_error_message_never_holds_a_token_a_url_holds_or_the_logged_in_one(monkeypatch):
    from urllib.parse import quote

    from commentrank.io_utils import redact

    monkeypatch.setenv("HF_TOKEN", "plainsecret-01")
    text = redact(f"GET http://user:{TOKEN}@mirror.local/api for {quote('a/b secret', safe='')} and plainsecret-01; "
                  f"{TOKEN}", "a/b secret")  # fmt: skip
    assert text == "GET http://***@mirror.local/api for *** and ***; ***"


def test_a_debug_traceback_is_redacted_too(monkeypatch, capsys):
    from commentrank.hub import HubError
    from commentrank.io_utils import exits_on_bad_input

    monkeypatch.setenv("COMMENTRANK_DEBUG", "1")
    with pytest.raises(SystemExit) as stop, exits_on_bad_input("score", HubError):
        try:
            raise ConnectionError(
                f"500 for url 'http://user:{TOKEN}@mirror.local/api' (Authorization: Bearer {TOKEN})"
            )
        except ConnectionError as err:
            raise HubError("cannot push to the Hub repo me/rm: ConnectionError: 500") from err
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" in err and "ConnectionError" in err and TOKEN not in err


@pytest.mark.xdist_group("hub_server")
@pytest.mark.slow  # a script in a subprocess against the local Hub server
def test_a_failed_push_names_the_repo_and_the_cause_never_the_token(model_dir, local_hub_env, tmp_path):
    from hub_server import run_script

    raw = write_jsonl(tmp_path / "raw.jsonl", cupit_rows(3))
    env = {**local_hub_env, "HF_TOKEN": TOKEN}
    proc = run_script("score", *score_args(model_dir, raw, tmp_path / "s", "--push_to_hub", "me/rm"), env=env,
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and TOKEN not in proc.stderr + proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("score: error: cannot push to the Hub repo me/rm: ") and "405" in last, proc.stderr[-2000:]


# --------------------------------------------------------------------------------------------------------------------
# No traceback, unless asked for
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # two scripts in subprocesses
@pytest.mark.parametrize("debug", [False, True])
def test_a_subprocess_shows_one_line_or_with_debug_the_traceback(debug, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COMMENTRANK_DEBUG"}
    if debug:
        env["COMMENTRANK_DEBUG"] = "1"
    cmd = [sys.executable, str(ROOT / "scripts" / "score.py"), "--model", "m", "--dataset", "d", "--output_dir", "o",
           "--batch_size", "0"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == (1 if debug else 2)
    if debug:
        assert "Traceback" in proc.stderr and "batch_size must be at least 1, got 0" in proc.stderr
    else:
        assert proc.stderr.strip() == "score: error: batch_size must be at least 1, got 0"


def test_the_installed_prepare_command_exits_0_after_a_good_run(tmp_path):
    """The console script runs `sys.exit(<entry point>())`: an entry point returning the summary exited 1 (and
    printed it) after writing the views."""
    import configparser
    import importlib

    entry = configparser.ConfigParser()
    entry.read(ROOT / "setup.cfg")
    (line,) = [x for x in entry["options.entry_points"]["console_scripts"].splitlines() if "commentrank-prepare" in x]
    module, function = line.split("=", 1)[1].strip().split(":")
    data = write_jsonl(tmp_path / "ranked.jsonl", cupit_rows(6))
    command = getattr(importlib.import_module(module), function)
    result = command(["--inputs", str(data), "--output_dir", str(tmp_path / "out"), "--test_size", "0"])
    assert result is None and (tmp_path / "out" / "summary.json").is_file()


def test_the_no_form_of_a_true_default_flag_has_help_of_its_own(capsys):
    with pytest.raises(SystemExit):
        main_of("export")(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no_int8, --no-int8 Turn int8 off (as --int8 false). --dataset" in text
