"""Publishing on the Hugging Face Hub: a model folder (once, at the end, without checkpoints or training arguments)
and data_prep's views as configs of one dataset repo.

The token is the one given (a training run's `--hub_token`), else the usual Hugging Face environment (`HF_TOKEN`) or
login (`hf auth login`): it is never printed or written here. A failed push is a `HubError`: one line naming the repo
and the cause.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)


class HubError(RuntimeError):
    """A push to the Hub failed: the message names the repo and the cause (never the token)."""


def _cause(err: BaseException, token: str | None) -> str:
    """The first line of an error, without the token."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text.replace(token, "***") if token else text


# Never uploaded: checkpoints, optimizer and scheduler states, pickled training arguments (they may hold a token),
# logs and hidden files (e.g. temporary files of atomic writes).
HUB_IGNORE_PATTERNS = [
    "checkpoint-*",
    "*/checkpoint-*",
    "global_step*",
    "optimizer.pt",
    "optimizer.bin",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "*.optim*",
    "training_args.bin",
    "runs/*",
    "wandb/*",
    ".*",
    "*/.*",
]


def repo_name_for(output_dir: str | os.PathLike, hub_model_id: str | None = None) -> str:
    """The Hub repo a training run pushes to: `hub_model_id`, else the output folder's name (`outputs/rm/` -> `rm`)."""
    name = hub_model_id or os.path.basename(os.path.normpath(os.path.abspath(output_dir)))
    if not name:
        raise ValueError(f"no Hub repo name in output_dir {output_dir!r}: set hub_model_id")
    return name


def push_model_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload commentrank reward model",
    ignore_patterns: list[str] | None = None,
    token: str | None = None,
) -> str:
    """Create the model repo if needed and upload the folder (model, tokenizer, README.md card, encoder settings),
    leaving out checkpoints, optimizer states and training arguments. Returns the repo id. `token`: default, the
    logged-in one."""
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json): nothing to upload")
    if not (folder / "README.md").is_file():
        logger.warning("%s has no README.md: the repo gets no model card", folder)
    known = token or get_token()  # checked here; HfApi gets only a token given explicitly (else it finds its own)
    if known is None:
        raise HubError(
            f"cannot push to the Hub repo {repo_id}: no Hugging Face token (log in with `hf auth login`, set HF_TOKEN "
            "or pass --hub_token)"
        )
    try:
        api = HfApi(token=token) if token else HfApi()
        url = api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
        repo_id = getattr(url, "repo_id", None) or repo_id
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message,
            ignore_patterns=list(ignore_patterns or HUB_IGNORE_PATTERNS),
        )
    except Exception as err:  # HTTP, network, permission, quota...: one line naming the repo
        raise HubError(f"cannot push to the Hub repo {repo_id}: {_cause(err, known)}") from err
    logger.info("uploaded %s to https://huggingface.co/%s", folder, repo_id)
    return repo_id


def stage_model_folder(model_path: str | os.PathLike, dest: str | os.PathLike, *, scorer=None, card=None) -> Path:
    """The folder to upload: the model folder's files (hard links, or copies; checkpoints, optimizer states and the
    old card left out) or, for a Hub model, the loaded model saved; plus the tokenizer and `commentrank_config.json`
    when missing, and the card as README.md. Built atomically; the model folder itself is never modified."""
    from huggingface_hub.utils import filter_repo_objects

    from commentrank.configs import ENCODER_SETTINGS_FILE
    from commentrank.io_utils import atomic_write_text
    from commentrank.outputs import OutputDir

    source = Path(model_path)
    with OutputDir(dest, "hub_upload") as tmp:
        if source.is_dir():
            files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
            for rel in filter_repo_objects(files, ignore_patterns=[*HUB_IGNORE_PATTERNS, "README.md"]):
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source / rel, target)
                except OSError:
                    shutil.copy2(source / rel, target)
        elif scorer is not None:
            scorer.model.save_pretrained(tmp)
        else:
            raise FileNotFoundError(f"{model_path} is not a local folder: pass the loaded scorer to stage it")
        if scorer is not None and not (tmp / "tokenizer_config.json").is_file():
            scorer.encoder.tokenizer.save_pretrained(tmp)
        if scorer is not None and not (tmp / ENCODER_SETTINGS_FILE).is_file():
            scorer.settings.save(tmp)
        if card is not None:
            atomic_write_text(tmp / "README.md", str(card))
    return Path(dest)


def push_dataset_views(dataset_dicts: dict, files: dict[str, str], repo_id: str, private: bool = False) -> None:
    """Each view becomes a config of one Hub dataset repo; `files` (name -> text, e.g. the summary) go next to them."""
    from huggingface_hub import HfApi, get_token

    try:
        for view, dataset_dict in dataset_dicts.items():
            dataset_dict.push_to_hub(repo_id, config_name=view, private=private)
        api = HfApi()
        for name, text in files.items():
            api.upload_file(
                path_or_fileobj=text.encode(), path_in_repo=name, repo_id=repo_id, repo_type="dataset",
                commit_message=f"data_prep {name}",
            )  # fmt: skip
    except Exception as err:  # HTTP, network, permission, quota...: one line naming the repo
        raise HubError(f"cannot push to the Hub dataset repo {repo_id}: {_cause(err, get_token())}") from err
