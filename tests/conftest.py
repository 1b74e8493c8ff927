import os
from pathlib import Path

# Tests run in parallel workers (pytest -n 2) on small machines: one thread each, never reach the Hub.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

pytest_plugins = ["hub_server"]  # fixtures local_hub, local_hub_env: a Hub-protocol server (tests/hub_server.py)
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "stackexchange" / "se_ranked.jsonl.gz"
POSTS_XML = ROOT / "data" / "stackexchange" / "raw" / "beer.meta.stackexchange.com" / "Posts.xml"


def load_script(name: str, folder: str = "scripts"):
    """A script of the repo (`scripts/<name>.py`, or another folder's) imported as a fresh module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer BERT built from a config, with the bundled MiniLM tokenizer, saved to a folder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from commentrank.bundled_models import minilm_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def prepared_sample(tmp_path_factory) -> str:
    """data_prep output for 40 posts of the shipped sample (all three views)."""
    from commentrank.configs import PrepArguments
    from commentrank.data.prepare import run_prepare

    folder = tmp_path_factory.mktemp("prepared") / "data"
    run_prepare(PrepArguments(inputs=[str(SAMPLE)], output_dir=str(folder), skip_invalid=True, max_posts=40,
                           test_size=0.2, validation_size=0.2))  # fmt: skip
    return str(folder)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_reward_on_two_cpu_processes(stage: int, argv: list[str], out) -> dict:
    """`accelerate launch` scripts/reward.py under DeepSpeed ZeRO-`stage` with 2 CPU processes (one thread each);
    checks that the saved model reloads and scores, and returns its trainer_state.json."""
    import json
    import subprocess
    import sys

    import torch

    from commentrank.encoding import PairEncoder
    from commentrank.modeling import load_reward_model, load_tokenizer
    from commentrank.score.inference import score_posts

    pytest.importorskip("deepspeed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    config = ROOT / "accelerate_configs" / f"cpu_2proc_zero{stage}.yaml"
    # A port of our own for each launch: the default 29500 may still be held by the previous launch (or by
    # another job on the machine), which fails the rendezvous with EADDRINUSE.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--main_process_port", str(_free_port()), str(ROOT / "scripts" / "reward.py"), *argv]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tokenizer = load_tokenizer(str(out))
    model = load_reward_model(str(out), tokenizer)
    rewards, _ = score_posts(model, PairEncoder(tokenizer, max_length=64), [{"prompt": "q", "comments": ["a", "b c"]}])
    assert torch.isfinite(torch.tensor(rewards[0])).all()
    return json.loads((out / "trainer_state.json").read_text())


# --------------------------------------------------------------------------------------------------------------------
# A stand-in for the Hub at the huggingface_hub boundary
# --------------------------------------------------------------------------------------------------------------------

TOKEN = "hf_commentrankFAKEtoken0123456789abcdef"


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records calls; lists the files upload_folder would commit."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        FakeHfApi.calls.append(("init", args, kwargs))

    def create_repo(self, repo_id, **kwargs):
        import huggingface_hub

        FakeHfApi.calls.append(("create_repo", repo_id, kwargs))
        full_id = repo_id if "/" in repo_id else f"user/{repo_id}"  # the Hub puts a bare name under the user
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{full_id}")

    def upload_folder(self, **kwargs):
        from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

        folder = Path(kwargs["folder_path"])
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        ignore = list(kwargs.get("ignore_patterns") or []) + DEFAULT_IGNORE_PATTERNS  # as upload_folder does
        kept = list(filter_repo_objects(files, allow_patterns=kwargs.get("allow_patterns"), ignore_patterns=ignore))
        FakeHfApi.calls.append(("upload_folder", kwargs, {f: (folder / f).read_bytes() for f in kept}))


@pytest.fixture
def fake_hub(monkeypatch):
    """huggingface_hub.HfApi replaced by `FakeHfApi` and a token in HF_TOKEN; returns the recorded calls."""
    import huggingface_hub

    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return FakeHfApi.calls


def single_final_upload(calls: list, repo_id: str) -> dict[str, bytes]:
    """Checks that a training script created `repo_id` and uploaded once, without checkpoints, training arguments
    or the token; returns the uploaded files."""
    uploads = [c for c in calls if c[0] == "upload_folder"]
    assert [c[1] for c in calls if c[0] == "create_repo"] == [repo_id] and len(uploads) == 1
    files = uploads[0][2]
    assert not any(f.startswith("checkpoint-") or f == "training_args.bin" for f in files)
    assert all(TOKEN.encode() not in content for content in files.values())
    return files
