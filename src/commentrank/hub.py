"""Publishing on the Hugging Face Hub: a model folder (once, at the end, without checkpoints or training arguments)
and data_prep's views as configs of one dataset repo.

The token is the one given (a training run's `--hub_token`), else the usual Hugging Face environment (`HF_TOKEN`) or
login (`hf auth login`): it is never printed or written here. A failed push is a `HubError`: one line naming the repo
and the cause.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
from pathlib import Path

from commentrank.outputs import MODEL_FILES

logger = logging.getLogger(__name__)


class HubError(RuntimeError):
    """A push to the Hub failed: the message names the repo and the cause (never the token)."""


def _cause(err: BaseException, token: str | None) -> str:
    """The first line of an error, without the token (or any other: `io_utils.redact`)."""
    from commentrank.io_utils import redact

    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return redact(text, token)


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
    "training_args.json",  # its paths are this machine's; the card's training table holds the settings
    "runs/*",
    "wandb/*",
    ".*",
    "*/.*",
]


# What a model push replaces in the repo: the files a model is made of, and what an earlier push may have left that
# does not belong to the new model (a pytorch_model.bin beside new safetensors, checkpoints). The repo's other files
# (a notebook, .gitattributes) stay; what the push uploads in the same commit is never deleted.
MODEL_REPO_FILES = [
    *(name for name in MODEL_FILES if name != "README.md"), "*.bin", "*.pt", "*.pth", "*.onnx", "*.onnx_data",
    "training_facts.json", "adapter_*", "checkpoint-*/**", "global_step*/**",
]  # fmt: skip


def repo_url(repo_id: str, repo_type: str = "model") -> str:
    """Where a pushed repo is seen: on the endpoint pushed to (`HF_ENDPOINT`, e.g. a company's Hub), not always
    huggingface.co."""
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def repo_name_for(output_dir: str | os.PathLike, hub_model_id: str | None = None) -> str:
    """The Hub repo a training run pushes to: `hub_model_id`, else the output folder's name (`outputs/rm/` -> `rm`)."""
    name = hub_model_id or os.path.basename(os.path.normpath(os.path.abspath(output_dir)))
    if not name:
        raise ValueError(f"no Hub repo name in output_dir {output_dir!r}: set hub_model_id")
    return name


def _ours_only(folder: str | os.PathLike) -> list[str] | None:
    """For a folder commentrank wrote (it carries the output marker): the patterns (for `filter_repo_objects` and
    `upload_folder`'s `allow_patterns`) of the entries its marker lists and of the files inside them, nothing else
    of the folder; None (everything) for a folder without the marker, such as a user's own model folder."""
    from commentrank.outputs import project_entries, read_marker

    marker = read_marker(folder)
    if marker is None:
        return None
    patterns = []
    for name in sorted(project_entries(folder, marker)):
        literal = glob.escape(name)  # a name taken as it is, never as a pattern
        patterns += [literal, f"{literal}/*"]
    return patterns


def hub_token(repo_id: str, token: str | None = None, token_flag: str | None = None) -> str:
    """The token a push to `repo_id` would use (`token`, else the logged-in one), or a HubError saying how to give
    one (`token_flag`: the flag of the script, if it has one), so that a run checks it before its work."""
    from huggingface_hub import get_token

    known = token or get_token()
    if known is None:
        ways = f", set HF_TOKEN or pass {token_flag}" if token_flag else " or set HF_TOKEN"
        ways = "log in with `hf auth login`" + ways
        raise HubError(f"cannot push to the Hub repo {repo_id}: no Hugging Face token ({ways})")
    return known


def push_model_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload commentrank reward model",
    ignore_patterns: list[str] | None = None,
    token: str | None = None,
    token_flag: str | None = None,
) -> str:
    """Create the model repo if needed and upload the folder (model, tokenizer, README.md card, encoder settings),
    leaving out checkpoints, optimizer states and training arguments. A folder commentrank wrote (it carries the
    output marker) uploads only the entries its marker lists: a user's files kept in it (notes, drafts) stay private.
    Returns the repo id. `token`: default, the logged-in one (`token_flag`: the script's flag that gives one)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(folder)
    allow_patterns = _ours_only(folder)
    ignore_patterns = list(ignore_patterns or HUB_IGNORE_PATTERNS)
    top = [name for name in ("config.json", "README.md") if (folder / name).is_file()]
    top = set(filter_repo_objects(top, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
    if "config.json" not in top:
        whose = " of commentrank's" if allow_patterns is not None else ""
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json{whose}): nothing to upload")
    if "README.md" not in top:
        logger.warning("%s has no README.md: the repo gets no model card", folder)
    known = hub_token(repo_id, token, token_flag)  # HfApi gets only a token given explicitly (else finds its own)
    try:
        api = HfApi(token=token) if token else HfApi()
        url = api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
        repo_id = getattr(url, "repo_id", None) or repo_id
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            delete_patterns=MODEL_REPO_FILES,  # one model in the repo: none of an earlier push's left beside it
        )
    except Exception as err:  # HTTP, network, permission, quota...: one line naming the repo
        raise HubError(f"cannot push to the Hub repo {repo_id}: {_cause(err, known)}") from err
    logger.info("uploaded %s to %s", folder, repo_url(repo_id))
    return repo_id


def stage_model_folder(model_path: str | os.PathLike, dest: str | os.PathLike, *, scorer=None, card=None) -> Path:
    """The folder to upload: the model folder's files (hard links, or copies; checkpoints, optimizer states, the old
    card and, in a folder commentrank wrote, whatever its marker does not list left out) or, for a Hub model, the
    loaded model saved; plus the tokenizer and `commentrank_config.json` when missing, and the card as README.md.
    Built atomically; the model folder itself is never modified: what staging writes is written beside the links and
    renamed over them (a rename replaces a link, never writes through it)."""
    from huggingface_hub.utils import filter_repo_objects

    from commentrank.configs import ENCODER_SETTINGS_FILE
    from commentrank.outputs import OutputDir

    source = Path(model_path)
    with OutputDir(dest, "hub_upload") as tmp:
        if source.is_dir():
            files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
            kept = filter_repo_objects(files, allow_patterns=_ours_only(source),
                                       ignore_patterns=[*HUB_IGNORE_PATTERNS, "README.md"])  # fmt: skip
            for rel in kept:
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
        written = Path(tempfile.mkdtemp(dir=tmp, prefix=".written-"))  # never a link to the model folder's files
        if scorer is not None and not (tmp / "tokenizer_config.json").is_file():
            scorer.encoder.tokenizer.save_pretrained(written)
        if scorer is not None and not (tmp / ENCODER_SETTINGS_FILE).is_file():
            scorer.settings.save(written)
        if card is not None:
            (written / "README.md").write_text(str(card), encoding="utf-8")
        for path in sorted(p for p in written.rglob("*") if p.is_file()):
            target = tmp / path.relative_to(written)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)  # replaces a linked file of the same name: the model folder's stays as it was
        shutil.rmtree(written)
    return Path(dest)


def push_dataset_views(dataset_dicts: dict, files: dict[str, str], repo_id: str, private: bool = False) -> None:
    """Each view becomes a config of one Hub dataset repo; `files` (name -> text: the summary, the prep config with
    the prompt template) go next to them, first, so that a push cut midway leaves views with their template. A failed
    push says the repo may hold part of it: a rerun pushes it whole."""
    from huggingface_hub import HfApi, get_token

    try:
        api = HfApi()
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        for name, text in files.items():
            api.upload_file(
                path_or_fileobj=text.encode(), path_in_repo=name, repo_id=repo_id, repo_type="dataset",
                commit_message=f"data_prep {name}",
            )  # fmt: skip
        for view, dataset_dict in dataset_dicts.items():
            dataset_dict.push_to_hub(repo_id, config_name=view, private=private)
    except Exception as err:  # HTTP, network, permission, quota...: one line naming the repo
        raise HubError(
            f"cannot push to the Hub dataset repo {repo_id}: {_cause(err, get_token())} (the repo may hold part of "
            "the views: run the same command again to push them all)"
        ) from err
