"""Batched reward inference: length-sorted batches with dynamic padding, no gradients.

Also what `scripts/score.py` and `scripts/rank.py` are made of: loading a reward model with the encoder settings
saved next to it (`commentrank_config.json`), reading posts to score (a ranked file, a data_prep folder or a Hub
dataset), predicted ranks, metrics against the baselines, and the output files.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .tokenization import PairEncoder

logger = logging.getLogger(__name__)

# The file the training script writes next to the model: how inputs were encoded (so scoring encodes them the same).
encoder_settings_path = "commentrank_config.json"
ENCODER_SETTINGS_PATH = encoder_settings_path
DEFAULT_ENCODER_SETTINGS = {
    "max_length": 512,
    "separator": "\n\n",
    "min_comment_tokens": 64,
    "truncation_side": "right",
    "text_prefix": "",
    "prompt_template": "{title}",
    "pad_at_eos": True,
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
RAW_SUFFIXES = (".jsonl", ".jsonl.gz", ".xml", ".csv", ".parquet", ".json")


# --------------------------------------------------------------------------------------------------------------------
# Batched inference
# --------------------------------------------------------------------------------------------------------------------


def pad_batch(sequences: Sequence[Sequence[int]], pad_token_id: int, pad_to: int | None = None) -> dict:
    """Right-pad token id lists to the longest (or to `pad_to`) with an attention mask."""
    width = pad_to or max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[i, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def check_logits(logits: torch.Tensor) -> None:
    """A reward model returns one logit per input; anything else is a classifier, not a reward model."""
    if logits.ndim != 2 or logits.shape[-1] != 1:
        raise ValueError(
            f"the model returns logits of shape {tuple(logits.shape)}: a reward model returns one logit per input "
            "(a sequence-classification head with num_labels=1)"
        )


@torch.no_grad()
def score_ids(
    model: torch.nn.Module,
    input_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    batch_size: int = 32,
    sort_by_length: bool = True,
    pad_to: int | None = None,
    progress: bool = False,
) -> list[float]:
    """Rewards for already-encoded inputs, in input order.

    `no_grad`, not `inference_mode`: the training callback scores mid-training, and buffers a model caches lazily
    during this forward must stay usable by autograd afterwards.
    """
    if not input_ids:
        return []
    device = next(model.parameters()).device
    if sort_by_length:
        batches = length_sorted_batches([len(x) for x in input_ids], batch_size)
    else:
        batches = [list(range(i, min(i + batch_size, len(input_ids)))) for i in range(0, len(input_ids), batch_size)]
    rewards = [0.0] * len(input_ids)
    was_training = model.training
    model.eval()
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="scoring", unit="batch")
    try:
        for batch in iterator:
            inputs = pad_batch([input_ids[i] for i in batch], pad_token_id, pad_to)
            logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits
            check_logits(logits)
            for i, value in zip(batch, logits[:, 0].float().tolist()):
                rewards[i] = value
    finally:
        model.train(was_training)
    return rewards


def score_posts(
    model: torch.nn.Module, encoder: PairEncoder, posts: Sequence[dict], batch_size: int = 32, progress: bool = False
) -> tuple[list[list[float]], int]:
    """Rewards for every comment of every post (dicts with `prompt` and `comments`); also the number truncated."""
    prompts = [post["prompt"] for post in posts for _ in post["comments"]]
    comments = [comment for post in posts for comment in post["comments"]]
    encoded = encoder.encode(prompts, comments)
    flat = score_ids(model, encoded.input_ids, encoder.tokenizer.pad_token_id, batch_size, progress=progress)
    rewards, start = [], 0
    for post in posts:
        rewards.append(flat[start : start + len(post["comments"])])
        start += len(post["comments"])
    return rewards, sum(encoded.truncated)


def predicted_ranks(rewards: Sequence[float]) -> list[int]:
    """Rank of each comment from its reward: 0 = highest reward; equal rewards keep their input order."""
    order = sorted(range(len(rewards)), key=lambda i: -rewards[i])
    ranks = [0] * len(rewards)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


# --------------------------------------------------------------------------------------------------------------------
# Loading a reward model with its encoder settings
# --------------------------------------------------------------------------------------------------------------------


def save_encoder_settings(output_dir: str | os.PathLike, **settings) -> Path:
    """Write `commentrank_config.json` (the defaults completed by `settings`) into a model folder, atomically."""
    from .io_utils import atomic_write_text

    unknown = set(settings) - set(DEFAULT_ENCODER_SETTINGS)
    if unknown:
        logger.info("encoder settings: keeping extra keys %s", sorted(unknown))
    values = {**DEFAULT_ENCODER_SETTINGS, **{k: v for k, v in settings.items() if v is not None}}
    path = Path(output_dir) / encoder_settings_path
    atomic_write_text(path, json.dumps(values, indent=2) + "\n")
    return path


def _settings_file(model_dir_or_id: str) -> Path | None:
    """The settings file of a local folder, or of a Hub model (downloaded or cached); None when there is none."""
    local = Path(model_dir_or_id)
    if local.is_dir():
        path = local / encoder_settings_path
        return path if path.is_file() else None
    if not HUB_ID.match(str(model_dir_or_id)):
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(model_dir_or_id), encoder_settings_path))
    except Exception as err:  # not on the Hub, offline, or no such file: the defaults apply
        logger.info(
            "no %s for %s (%s): default encoder settings", encoder_settings_path, model_dir_or_id, type(err).__name__
        )
        return None


def read_encoder_settings(model_dir_or_id: str | os.PathLike) -> dict:
    """The encoder settings saved with a model, completed with the defaults (the defaults alone when none saved)."""
    path = _settings_file(str(model_dir_or_id))
    if path is None:
        return dict(DEFAULT_ENCODER_SETTINGS)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: expected a JSON object of encoder settings, got {type(saved).__name__}")
    return {**DEFAULT_ENCODER_SETTINGS, **{k: v for k, v in saved.items() if v is not None}}


def _model_max_positions(tokenizer, model=None) -> int | None:
    limits = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limits.append(int(tokenizer.model_max_length))
    config = getattr(model, "config", None)
    if getattr(config, "max_position_embeddings", None):
        limits.append(int(config.max_position_embeddings))
    return min(limits) if limits else None


def load_encoder(
    model_dir_or_id: str | os.PathLike, tokenizer, max_length: int | None = None, model=None
) -> PairEncoder:
    """A `PairEncoder` built from the model's `commentrank_config.json` (defaults when absent); `max_length`
    overrides the saved one. A length beyond what the model can embed is lowered to that limit."""
    settings = read_encoder_settings(model_dir_or_id)
    length = int(max_length or settings["max_length"] or DEFAULT_ENCODER_SETTINGS["max_length"])
    limit = _model_max_positions(tokenizer, model)
    if limit is not None and length > limit:
        logger.warning("max_length %d is more than the model takes (%d): using %d", length, limit, limit)
        length = limit
    return PairEncoder(
        tokenizer,
        max_length=length,
        separator=settings["separator"],
        min_comment_tokens=int(settings["min_comment_tokens"]),
        truncation_side=settings["truncation_side"],
        prefix=settings["text_prefix"] or "",
    )


@dataclass
class Scorer:
    """A reward model ready to score: model, tokenizer, encoder and the encoder settings it was trained with."""

    model: torch.nn.Module
    tokenizer: object
    encoder: PairEncoder
    settings: dict = field(default_factory=dict)
    name_or_path: str = ""

    def score(self, posts: Sequence[dict], batch_size: int = 32, progress: bool = False):
        """`score_posts` with this model: (rewards per post, number of truncated inputs)."""
        return score_posts(self.model, self.encoder, posts, batch_size, progress)

    def rank(self, prompt: str, comments: Sequence[str], batch_size: int = 32) -> list[tuple[int, float]]:
        """(index, reward) of each comment, best first."""
        (rewards,), _ = self.score([{"prompt": prompt, "comments": list(comments)}], batch_size)
        return sorted(enumerate(rewards), key=lambda item: -item[1])


def _check_model_source(model_path: str) -> None:
    path = Path(model_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model folder {model_path} has no config.json: not a saved model")
        return
    if path.exists():
        raise FileNotFoundError(f"model {model_path} is a file: pass the folder of a saved model or a Hub model id")
    if not HUB_ID.match(model_path) or model_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model not found: {model_path} (no such folder)")


def check_reward_head(config, name: str) -> None:
    """Refuse checkpoints without a one-label sequence-classification head (their scores would be random)."""
    architectures = getattr(config, "architectures", None) or []
    labels = getattr(config, "num_labels", 1)
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        if labels != 1:
            raise ValueError(
                f"{name} is a classifier with {labels} labels; a reward model has a single-logit head (num_labels=1)"
            )
        return
    raise ValueError(
        f"{name} has no reward head (architectures: {architectures or 'unknown'}): a new one would score at random. "
        "Train a reward model with scripts/reward.py, or pass allow_new_head to score with an untrained head"
    )


def load_scorer(
    model_path: str | os.PathLike,
    max_length: int | None = None,
    device: str | torch.device | None = None,
    dtype: str = "float32",
    allow_new_head: bool = False,
) -> Scorer:
    """Model, tokenizer and encoder of a reward model folder or Hub id, with the encoder settings saved next to it.

    Clear errors for a missing model, a checkpoint without a single-logit head and a multi-label classifier.
    """
    from transformers import AutoConfig

    from .modeling import load_reward_model, load_tokenizer

    model_path = str(model_path)
    _check_model_source(model_path)
    try:
        config = AutoConfig.from_pretrained(model_path)
    except OSError as err:
        raise FileNotFoundError(
            f"model not found: {model_path} is neither a local folder nor a Hub model available offline "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    if not allow_new_head or getattr(config, "num_labels", 1) != 1:
        check_reward_head(config, model_path)
    settings = read_encoder_settings(model_path)
    tokenizer = load_tokenizer(model_path, pad_at_eos=bool(settings["pad_at_eos"]))
    model = load_reward_model(model_path, tokenizer, dtype=dtype)
    if model.config.num_labels != 1:
        raise ValueError(f"{model_path} has {model.config.num_labels} labels; a reward model needs num_labels=1")
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    encoder = load_encoder(model_path, tokenizer, max_length, model)
    settings["max_length"] = encoder.max_length
    return Scorer(model, tokenizer, encoder, settings, model_path)


# --------------------------------------------------------------------------------------------------------------------
# Posts to score
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ScoringData:
    """Posts as listwise rows (`prompt`, `comments`, `ranks` or None, optional `votes`, `post_id`, `text`)."""

    rows: list[dict]
    source: str
    split: str | None = None
    skipped: dict = field(default_factory=dict)


def _from_posts(posts, prompt_template: str) -> list[dict]:
    from .views import build_prompt, listwise_row

    return [{**listwise_row(p, build_prompt(p, prompt_template)), "text": p.title} for p in posts]


def _read_ranked_file(path: str, prompt_template: str, skip_invalid: bool) -> ScoringData:
    from .prepare import PrepConfig, load_posts
    from .validation import PrepSummary

    summary = PrepSummary()
    config = PrepConfig(inputs=[path], skip_invalid=skip_invalid, min_comments=1)
    posts = load_posts(config, summary)
    return ScoringData(_from_posts(posts, prompt_template), path, None, dict(summary.posts_dropped))


def _pick_split(dataset_dict, split: str, source: str) -> tuple:
    if split in dataset_dict:
        return dataset_dict[split], split
    if "unlabeled" in dataset_dict:
        logger.warning("%s has no split '%s': scoring its 'unlabeled' split", source, split)
        return dataset_dict["unlabeled"], "unlabeled"
    raise ValueError(f"{source} has no split '{split}' (splits: {', '.join(dataset_dict)}); choose one with --split")


def _read_folder(path: Path, split: str) -> tuple[list[dict], str]:
    import datasets

    for candidate in (path / "listwise", path):
        if (candidate / "dataset_dict.json").is_file():
            rows, split = _pick_split(datasets.load_from_disk(str(candidate)), split, str(path))
            return list(rows), split
        if (candidate / "state.json").is_file():
            return list(datasets.load_from_disk(str(candidate))), None
    raise FileNotFoundError(
        f"dataset folder {path} holds no listwise view: expected a folder written by data_prep/prepare.py "
        "(with listwise/) or a DatasetDict saved with save_to_disk"
    )


def _read_hub(dataset_id: str, split: str) -> tuple[list[dict], str]:
    import datasets

    try:
        try:
            loaded = datasets.load_dataset(dataset_id, "listwise")
        except ValueError:  # no such config: a plain dataset (listwise rows or raw CUP IT rows)
            loaded = datasets.load_dataset(dataset_id)
    except (FileNotFoundError, ConnectionError, OSError) as err:
        raise FileNotFoundError(
            f"dataset not found: {dataset_id} is neither a local file or folder nor a Hub dataset available "
            f"offline ({type(err).__name__})"
        ) from None
    rows, split = _pick_split(loaded, split, dataset_id)
    return list(rows), split


def _is_raw_cupit(rows: list[dict]) -> bool:
    first = rows[0]
    return "prompt" not in first and "text" in first and isinstance(first.get("comments"), list)


def validate_rows(rows: list[dict], source: str, skip_invalid: bool = False) -> tuple[list[dict], dict]:
    """Check listwise rows before scoring; errors name the row and field. Returns the kept rows and skip counts."""
    from collections import Counter

    from .validation import InvalidInputError

    if rows:
        missing = [key for key in ("prompt", "comments") if key not in rows[0]]
        if missing:
            raise ValueError(
                f"{source}: rows lack the field(s) {missing}: expected listwise rows (prompt, comments, ranks, votes) "
                f"or CUP IT rows (text, comments of {{text, score}}); found {sorted(rows[0])}"
            )
    kept, skipped = [], Counter()
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem is None:
            kept.append(row)
            continue
        if not skip_invalid:
            raise InvalidInputError(f"{source}:row {i}", problem)
        skipped[problem.reason] += 1
    return kept, dict(skipped)


def _row_problem(row: dict):
    from .validation import Problem

    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        return Problem("empty_post_text", "prompt", "the prompt is missing or empty")
    comments = row.get("comments")
    if not isinstance(comments, list):
        return Problem("wrong_type", "comments", f"expected a list of comment texts, got {type(comments).__name__}")
    if not comments:
        return Problem("empty_post", "comments", "the post has no comments to score")
    for j, comment in enumerate(comments):
        if not isinstance(comment, str):
            return Problem("wrong_type", f"comments[{j}]", f"expected a string, got {type(comment).__name__}")
        if not comment.strip():
            return Problem("empty_comment_text", f"comments[{j}]", "the comment text is empty")
    for key in ("ranks", "votes"):
        values = row.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != len(comments):
            return Problem("wrong_length", key, f"{key} must list one value per comment ({len(comments)})")
        if key == "ranks" and any(v is None for v in values) and not all(v is None for v in values):
            return Problem("mixed_labels", key, "some comments are ranked and some are not")
    return None


def load_scoring_data(
    dataset: str,
    split: str = "test",
    prompt_template: str = "{title}",
    skip_invalid: bool = False,
    max_posts: int | None = None,
) -> ScoringData:
    """Posts to score from a ranked file (CUP IT JSONL, Posts.xml, CSV...: converted with data_prep's readers), a
    data_prep folder (its listwise view, `split`, else `unlabeled`) or a Hub dataset (listwise or CUP IT rows)."""
    path = Path(dataset)
    name = path.name.lower()
    if path.is_file() or name.endswith(RAW_SUFFIXES):
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {dataset}")
        data = _read_ranked_file(dataset, prompt_template, skip_invalid)
    else:
        if path.is_dir():
            rows, used_split = _read_folder(path, split)
        elif HUB_ID.match(dataset) and not dataset.startswith((".", "/", "~")):
            rows, used_split = _read_hub(dataset, split)
        else:
            raise FileNotFoundError(f"dataset not found: {dataset} (no such file or folder)")
        if rows and _is_raw_cupit(rows):
            from .prepare import PrepConfig
            from .readers import read_rows
            from .validation import PrepSummary, collect_posts

            summary = PrepSummary()
            items = read_rows(rows, dataset, PrepConfig().columns)
            posts = list(collect_posts(items, summary, skip_invalid, min_comments=1))
            data = ScoringData(_from_posts(posts, prompt_template), dataset, used_split, dict(summary.posts_dropped))
        else:
            kept, skipped = validate_rows(rows, dataset, skip_invalid)
            data = ScoringData(kept, dataset, used_split, skipped)
    if max_posts is not None:
        data.rows = data.rows[:max_posts]
    if not data.rows:
        raise ValueError(f"{dataset}: no posts to score" + (f" (skipped: {data.skipped})" if data.skipped else ""))
    return data


# --------------------------------------------------------------------------------------------------------------------
# Metrics and outputs
# --------------------------------------------------------------------------------------------------------------------


def evaluate_rewards(rows: Sequence[dict], rewards: Sequence[Sequence[float]], n_seeds: int = 20, seed: int = 0):
    """{"model", "random", "longest_first"} -> `ranking_metrics` on the labeled posts with 2+ comments, or None
    when no post is labeled. The baselines rank the same posts."""
    from .metrics import baseline_metrics, ranking_metrics

    posts = [
        {"ranks": row["ranks"], "votes": row.get("votes"), "comments": row["comments"], "scores": list(r)}
        for row, r in zip(rows, rewards)
        if row.get("ranks") is not None and all(v is not None for v in row["ranks"]) and len(row["comments"]) > 1
    ]
    if not posts:
        return None
    return {"model": ranking_metrics(posts), **baseline_metrics(posts, n_seeds=n_seeds, seed=seed)}


def prediction_records(rows: Sequence[dict], rewards: Sequence[Sequence[float]]) -> list[dict]:
    """CUP IT submission records: the post with its comments in input order, each with `reward` and `score`
    (the predicted rank, 0 = best)."""
    records = []
    for row, post_rewards in zip(rows, rewards):
        ranks = predicted_ranks(post_rewards)
        record = {"post_id": row.get("post_id"), "text": row.get("text", row["prompt"])}
        record["comments"] = [
            {"text": text, "score": rank, "reward": reward}
            for text, rank, reward in zip(row["comments"], ranks, post_rewards)
        ]
        records.append(record)
    return records


PLOT_NAME = "ndcg_at_k.png"


def report_markdown(results: dict, info: dict) -> str:
    from .report import markdown_table

    ks = ("ndcg@1", "ndcg@2", "ndcg@3", "ndcg@4", "ndcg@5")
    votes = tuple(k.replace("ndcg@", "ndcg_votes@") for k in ks)
    lines = [
        "# Comment ranking report",
        "",
        f"- model: `{info['model']}`",
        f"- dataset: `{info['dataset']}`" + (f", split `{info['split']}`" if info.get("split") else ""),
        f"- posts evaluated: {int(results['model']['n_posts'])} ({int(results['model']['n_comments'])} comments)",
        f"- inputs truncated to {info['max_length']} tokens: {info['n_truncated']} of {info['n_comments']}",
        "",
        "NDCG@k with linear gain, relevance `n - 1 - rank` (and `votes - min` where votes exist); pair accuracy "
        f"over all label-ordered pairs; random averaged over {info.get('n_seeds', 20)} seeds.",
        "",
        markdown_table(results, (*ks, "pair_accuracy")),
    ]
    if any(votes[0] in metrics for metrics in results.values()):
        lines += ["", "Relevance from votes:", "", markdown_table(results, votes)]
    lines += ["", f"![NDCG@k]({PLOT_NAME})", ""]
    return "\n".join(lines)


def write_outputs(output_dir: str | os.PathLike, rows, rewards, results: dict | None, info: dict) -> list[Path]:
    """predictions.jsonl always; metrics.json, report.md and the NDCG plot when there are labels. Atomic writes."""
    from .io_utils import atomic_write_text
    from .report import plot_ndcg

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in prediction_records(rows, rewards))
    atomic_write_text(out / "predictions.jsonl", lines)
    written = [out / "predictions.jsonl"]
    if results is not None:
        atomic_write_text(out / "metrics.json", json.dumps({"results": results, **info}, indent=2) + "\n")
        atomic_write_text(out / "report.md", report_markdown(results, info))
        plot_ndcg(results, out / PLOT_NAME)
        written += [out / "metrics.json", out / "report.md", out / PLOT_NAME]
    return written
