"""A local Hugging Face Hub for tests: olah (MIT, `pip install olah`) serving plain git repositories from a temporary
folder, offline, on 127.0.0.1 only. Downloads (`snapshot_download`, `hf_hub_download`, `datasets.load_dataset`, the
`*_info` calls) speak the real Hub protocol to it; uploads are not served (`create_repo` answers 405): upload tests
keep `conftest.FakeHfApi`.

    def test_x(local_hub, local_hub_env, tmp_path):  # fixtures registered in conftest.py (pytest_plugins)
        local_hub.add_model("user/rm", model_folder)
        local_hub.add_dataset("user/ds", prepared_dataset_files(data_prep_folder))
        run_script("score", "--model", "user/rm", "--dataset", "user/ds", ..., env=local_hub_env, cwd=tmp_path)

huggingface_hub and datasets read HF_ENDPOINT and the offline flags once, at import, so the code under test runs in
a subprocess with `local_hub_env` (this process stays offline and keeps its caches). olah serves a repo's files from
its git tree; for "main" to resolve when a file is *missing* (a 404 EntryNotFound, as on the Hub, instead of olah's
offline 401 RepoNotFound, which also breaks AutoTokenizer) each repo's branch is also recorded in olah's own revision
cache, as olah does when it proxies the Hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0  # olah answers in about a second
STOP_TIMEOUT_S = 10.0
PROBE_REPO = "commentrank-tests/ready"  # a model repo served from the start: the readiness probe
REPO_TYPES = {"model": "models", "dataset": "datasets"}
# Environment that would point a subprocess elsewhere than the local server or its own empty caches.
FOREIGN_ENV = (
    "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
    "HF_DATASETS_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE", "TRANSFORMERS_CACHE", "HF_MODULES_CACHE", "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
)  # fmt: skip
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _git(folder: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=commentrank tests", "-c", "user.email=tests@commentrank.invalid",
           "-c", "commit.gpgsign=false", "-C", str(folder), *args]  # fmt: skip
    proc = subprocess.run(cmd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {folder}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _write(target: Path, content: bytes | str | os.PathLike) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    elif isinstance(content, str):
        target.write_text(content, encoding="utf-8")
    else:
        shutil.copyfile(content, target)


@dataclass
class HubServer:
    """An olah server on `endpoint` serving the git repositories under `mirrors` (`{models|datasets}/org/name`)."""

    endpoint: str
    mirrors: Path
    cache: Path  # olah's repos-path: its revision cache (and what it would cache of an upstream)
    log: Path

    def add_repo(self, repo_id: str, files: Mapping[str, bytes | str | os.PathLike], repo_type: str = "model") -> str:
        """Serve `files` (path in the repo -> bytes, text or a file to copy) as `repo_id`, one commit on main,
        replacing any repo of that id. Returns the commit hash."""
        org, _, name = repo_id.partition("/")
        if not org or not name or "/" in name:
            raise ValueError(f"repo_id must be 'org/name', got {repo_id!r}")
        kind = REPO_TYPES[repo_type]
        folder = self.mirrors / kind / org / name
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(self.cache / "api" / kind / org / name, ignore_errors=True)
        folder.mkdir(parents=True)
        for path, content in files.items():
            _write(folder / path, content)
        _git(folder, "init", "-q", "-b", "main")
        _git(folder, "add", "-A")
        _git(folder, "commit", "-q", "-m", f"add {repo_id}")
        sha = _git(folder, "rev-parse", "HEAD")
        self._record_branch(kind, org, name, folder, sha)
        return sha

    def add_model(self, repo_id: str, folder: str | os.PathLike) -> str:
        """Serve the files of a model folder as a model repo."""
        folder = Path(folder)
        return self.add_repo(repo_id, {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()})

    def add_dataset(self, repo_id: str, files: Mapping[str, bytes | str | os.PathLike]) -> str:
        return self.add_repo(repo_id, files, "dataset")

    def _record_branch(self, kind: str, org: str, name: str, folder: Path, sha: str) -> None:
        """Where main points, in olah's offline revision cache, written with olah's own functions: file routes then
        resolve main for paths the repo lacks (404 EntryNotFound) and `*_info` calls need no explicit revision."""
        from olah.mirror.repos import LocalMirrorRepo
        from olah.utils.cache_utils import write_cache_request
        from olah.utils.repo_utils import get_resolved_commit_save_path

        resolved = Path(get_resolved_commit_save_path(str(self.cache), kind, org, name, "main"))
        resolved.parent.mkdir(parents=True, exist_ok=True)
        asyncio.run(write_cache_request(str(resolved), 200, {}, sha.encode("ascii")))
        meta = LocalMirrorRepo(str(folder), kind, org, name).get_meta(sha)
        (resolved.parent / "meta_head.json").write_text(json.dumps(meta), encoding="utf-8")

    def env(self, hf_home: str | os.PathLike) -> dict[str, str]:
        """This process's environment for a subprocess that talks to this server only, with caches in `hf_home`."""
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
        env.update(HF_ENDPOINT=self.endpoint, HF_HOME=str(hf_home), NO_PROXY="127.0.0.1,localhost",
                   no_proxy="127.0.0.1,localhost", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="30",
                   HF_HUB_DOWNLOAD_TIMEOUT="30")  # fmt: skip
        return env

    def get(self, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        """One request to the server (never through a proxy): (status, headers with lower-case names, body)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(self.endpoint + path, method=method)
        try:
            with opener.open(request, timeout=timeout) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def log_tail(self, n: int = 3000) -> str:
        texts = [p.read_text(errors="replace") for p in sorted(self.log.rglob("*")) if p.is_file()]
        return "\n".join(texts)[-n:]


def _parent_death_signal():
    """A preexec_fn that has the kernel send the server SIGTERM when this process dies, even killed (Linux; else
    None): the server never outlives the test session. The libc call is looked up here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def serve(root: Path, attempts: int = 3):
    """An olah server on a free loopback port serving `root`/mirrors; stopped on exit (and on any failure). A start
    that fails (e.g. the port taken in the meantime) is retried on another port; then the test is skipped."""
    import importlib.util

    if importlib.util.find_spec("olah") is None:
        pytest.skip("olah is not installed: pip install -e '.[dev]' (or olah==0.5.4) for the Hub server tests")
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the Hub server tests serve git repositories")
    server = HubServer("", root / "mirrors", root / "olah-cache", root / "olah-logs")
    for folder in (server.mirrors, server.cache, server.log):
        folder.mkdir(parents=True, exist_ok=True)
    try:
        server.add_repo(PROBE_REPO, {"README.md": "readiness probe\n"})
    except ImportError as err:  # olah's modules (used to record the branch) do not import
        pytest.skip(f"olah cannot start: {type(err).__name__}: {err}")
    failures = []
    for attempt in range(attempts):
        proc, failure = _start(server, root, attempt)
        if failure is None:
            break
        failures.append(failure)
    else:
        pytest.skip(f"olah cannot start ({attempts} tries): {failures[-1]}")
    try:
        yield server
    finally:
        _stop(proc)


def _start(server: HubServer, root: Path, attempt: int) -> tuple[subprocess.Popen, str | None]:
    """Start olah on a free port and wait (bounded) until it serves the probe repo: (process, None), or a stopped
    process and why it failed."""
    port = free_port()
    server.endpoint = f"http://127.0.0.1:{port}"
    config = root / f"olah-{attempt}.toml"
    config.write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = {json.dumps(str(server.cache))}\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f"mirrors-path = [{json.dumps(str(server.mirrors))}]\n\n[accessibility]\noffline = true\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    with open(server.log / f"server-{attempt}.out", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "-c", str(config), "--log-path", str(server.log)],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_parent_death_signal(),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                status, _, body = server.get(f"/api/models/{PROBE_REPO}/revision/main", timeout=2.0)
                if status == 200 and json.loads(body).get("sha"):
                    return proc, None
            time.sleep(0.1)
    except BaseException:
        _stop(proc)
        raise
    _stop(proc)
    why = f"exited with code {proc.returncode}" if proc.returncode is not None else "did not answer"
    return proc, f"olah {why} on {server.endpoint} within {START_TIMEOUT_S:.0f}s:\n{server.log_tail()}"


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory):
    """The session's local Hub (a `HubServer`); skipped, with the reason, when olah cannot start."""
    with serve(tmp_path_factory.mktemp("hub")) as server:
        yield server


@pytest.fixture
def local_hub_env(local_hub, monkeypatch, tmp_path) -> dict[str, str]:
    """For this test only: HF_ENDPOINT on the local Hub, the offline flags unset and empty caches (HF_HOME) in
    tmp_path; returns the environment for the subprocesses that run the code under test."""
    env = local_hub.env(tmp_path / "hf_home")
    for key in FOREIGN_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    return env


def run_script(name: str, *args: str, env: Mapping[str, str], cwd: str | os.PathLike, timeout: float = 300):
    """`python scripts/<name>.py ARGS` in a subprocess (bounded): the CompletedProcess, output captured."""
    cmd = [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args]
    return subprocess.run(cmd, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------------------------------
# A data_prep output as `--push_to_hub` lays it out
# --------------------------------------------------------------------------------------------------------------------


def dataset_repo_files(configs: Mapping[str, object]) -> dict[str, bytes | str]:
    """The files `DatasetDict.push_to_hub(repo, config_name=name)` writes for each (name, DatasetDict) of `configs`:
    one parquet shard per split, `<dir>/<split>-00000-of-00001.parquet` (`<dir>`: the config name, `data` for
    `default`), and the README's `dataset_info` and `configs` entries (`- split: <split>`, `path: <dir>/<split>-*`),
    made with the classes datasets makes them with."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    files: dict[str, bytes | str] = {}
    infos, metadata = {}, {}
    for name, dataset_dict in configs.items():
        data_dir = name if name != "default" else "data"
        info = DatasetInfo(config_name=name, splits=SplitDict(), download_size=0, dataset_size=0)
        data_files = []
        for split, dataset in dataset_dict.items():
            shard = _parquet_bytes(dataset)
            files[f"{data_dir}/{split}-00000-of-00001.parquet"] = shard
            info.features = dataset.features
            info.splits.add(SplitInfo(split, num_bytes=dataset.data.nbytes, num_examples=len(dataset)))
            info.download_size += len(shard)
            info.dataset_size += dataset.data.nbytes
            data_files.append({"split": split, "path": f"{data_dir}/{split}-*"})
        info.size_in_bytes = info.download_size + info.dataset_size
        infos[name], metadata[name] = info, {"data_files": data_files}
    card_data = DatasetCardData()
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    MetadataConfigs(metadata).to_dataset_card_data(card_data)
    files["README.md"] = str(DatasetCard(f"---\n{card_data}\n---\n"))
    return files


def prepared_dataset_files(folder: str | os.PathLike) -> dict[str, bytes | str]:
    """The dataset repo `data_prep --push_to_hub` writes for what a data_prep folder holds: each view a config
    (`dataset_repo_files`), then `summary.json` and `prep_config.json` (the same text as in the folder)."""
    import datasets

    from commentrank.configs import VIEWS

    folder = Path(folder)
    views = {view: datasets.load_from_disk(str(folder / view)) for view in VIEWS if (folder / view).is_dir()}
    files = dataset_repo_files(views)
    for name in ("summary.json", "prep_config.json"):
        if (folder / name).is_file():
            files[name] = (folder / name).read_text(encoding="utf-8")
    return files


def _parquet_bytes(dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    dataset.to_parquet(buffer)
    return buffer.getvalue()
