import os
from pathlib import Path

# Tests run in parallel workers (pytest -n 2) on small machines: one thread each, never reach the Hub.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "stackexchange" / "se_ranked.jsonl.gz"
POSTS_XML = ROOT / "data" / "stackexchange" / "raw" / "beer.meta.stackexchange.com" / "Posts.xml"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def sample_path() -> Path:
    return SAMPLE
