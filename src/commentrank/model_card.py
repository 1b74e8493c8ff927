"""Model cards for the models commentrank trains: reward models (their NDCG results as `model-index` metadata, the
loss they were trained with, how to score comments) and SFT models (the first stage of the CUP IT pipeline).

    card = build_model_card(model_id="me/minilm-comment-rm", base_model="bundled:minilm", dataset="data/x.jsonl.gz",
                            results={"model": ranking_metrics(...), **baseline_metrics(...)}, loss_type="listmle",
                            settings=encoder.settings, text_pair=encoder.text_pair)
    save_model_card(card, "outputs/rm")    # README.md; commentrank.hub.push_model_folder uploads the folder
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from commentrank.bundled_models import bundled_hub_id
from commentrank.configs import EncoderSettings
from commentrank.io_utils import atomic_write_text, is_hub_id
from commentrank.length import length_term_code
from commentrank.score.report import LENGTH_NOTE, interval_note, length_table, markdown_table, verdict_lines
from commentrank.train.losses import LOSSES

logger = logging.getLogger(__name__)

TASK_TYPE = "text-ranking"
TASK_NAME = "Comment ranking"
REWARD_TAGS = ("reward-model", "commentrank", "text-ranking", "trl")
SFT_TAGS = ("commentrank", "cup-it", "trl", "sft")
METRIC_LABELS = {
    "pair_accuracy": ("accuracy", "Pair accuracy", {}),
    "grouped_ndcg@5": ("ndcg", "Grouped NDCG@5 (CUP IT)", {"k": 5, "relevance": "rank"}),
    "paired_ndcg@2": ("ndcg", "Paired NDCG@2 (CUP IT, adjacent pairs)", {"k": 2, "relevance": "chosen over rejected"}),
    "length_spearman": ("spearmanr", "Length Spearman (reward vs comment length)", {"per": "post"}),
    "shorter_better_pair_accuracy": ("accuracy", "Shorter-better pair accuracy", {"pairs": "better comment shorter"}),
}
LENGTH_METRICS = (
    "length_spearman",
    "length_spearman_n_posts",
    "shorter_better_pair_accuracy",
    "shorter_better_n_pairs",
)


def hub_model_id(name: str | None) -> str | None:
    """The Hub id of a base model: itself for a Hub id, the source of a bundled model, None for other folders."""
    if not name:
        return None
    bundled = bundled_hub_id(name)
    if bundled or Path(name).exists():
        return bundled
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


def eval_results(metrics: dict[str, float], dataset: str, split: str | None) -> list[EvalResult]:
    """One `EvalResult` per NDCG / pair-accuracy value (rounded to 4 decimals); counts and NaNs are left out. `split`
    None (a raw file or a saved Dataset, which have no splits): no split is named."""
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


def usage_snippet(
    model_id: str, text_pair: bool, max_length: int = 512, separator: str = "\n\n", length_weight: float = 0.0
) -> str:
    """Scoring comments with plain transformers and with commentrank's scripts (with the model's length term, as
    every commentrank scorer adds it, when it has one)."""
    if text_pair:
        encode = (
            "# (post, comment) as a text pair: [CLS] post [SEP] comment [SEP], as CrossEncoder and TEI pass it\n"
            "inputs = tokenizer([post] * len(comments), comments, padding=True, truncation=True,\n"
            f'                   max_length={max_length}, return_tensors="pt")'
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
    length_term = length_term_code(length_weight)
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
{length_term}for reward, comment in sorted(zip(rewards.tolist(), comments), reverse=True):  # best first
    print(f"{{reward:+.4f}}  {{comment}}")
```

With commentrank's scripts (they encode inputs exactly as in training, with the settings in
`commentrank_config.json`, and truncate long comments instead of the end of the input):

```bash
# one post: JSON {{"text", "comments"}} on stdin or in a file; comments printed best first with their rewards
echo '{example}' | python scripts/rank.py --model {model_id}

# every post of a file (CUP IT JSONL, Posts.xml, CSV), a data_prep folder or a Hub dataset: predictions.jsonl and
# metrics.json (the counts; with labels also NDCG@1..5, pair accuracy, baselines), and with labels report.md and a plot
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


def _base_text(base_model: str | None) -> str:
    if not base_model:
        return "a pretrained transformer"
    base_id = hub_model_id(base_model)
    return f"[{base_id}](https://huggingface.co/{base_id})" if base_id else f"`{display_name(base_model)}`"


def _data_section(dataset_name: str | None) -> list[str]:
    if not dataset_name:
        return []
    return [
        "## Data",
        "",
        f"Trained and evaluated on `{dataset_name}`. Check the license of the data (the Stack Exchange sample shipped "
        "with commentrank is CC BY-SA) before redistributing outputs that quote it.",
        "",
    ]


def _length_controlled(results: dict, evaluation: dict) -> dict[str, dict]:
    """ranker -> length-controlled metrics: from `evaluation`, else from the rankers' metrics that hold them."""
    if evaluation.get("length_controlled"):
        return {
            name: {k: v for k, v in m.items() if v is not None} for name, m in evaluation["length_controlled"].items()
        }
    found = {name: {k: m[k] for k in LENGTH_METRICS if k in m} for name, m in results.items()}
    return {name: m for name, m in found.items() if "length_spearman" in m or "shorter_better_pair_accuracy" in m}


def _evaluation_lines(results: dict, evaluation: dict, length_controlled: dict) -> list[str]:
    """The comparison table (with intervals when there are), the verdicts against the baselines and the
    length-controlled table."""
    intervals, bootstrap = evaluation.get("intervals"), evaluation.get("bootstrap") or {}
    lines = [interval_note(bootstrap), ""] if intervals else []
    lines += [markdown_table(results, intervals=intervals), ""]
    if evaluation.get("differences"):
        lines += ["Model minus baseline (paired bootstrap on the same resampled posts):", "",
                  *verdict_lines(evaluation["differences"], bootstrap), ""]  # fmt: skip
    if length_controlled:
        lines += ["### Length-controlled metrics", "", LENGTH_NOTE, "", length_table(length_controlled, intervals), ""]
    return lines


def _card(card_data: ModelCardData, sections: list[str]) -> ModelCard:
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(sections))


def build_model_card(
    *,
    model_id: str,
    base_model: str | None,
    dataset: str | None,
    results: dict[str, dict[str, float]],
    loss_type: str | None,
    text_pair: bool,
    settings: EncoderSettings | None = None,
    split: str | None = "test",
    license: str = "apache-2.0",
    training: dict | None = None,
    tags: list[str] | None = None,
    evaluation: dict | None = None,
    dtype: str | None = None,
) -> ModelCard:
    """A reward model's card: `model-index` (the model's NDCG@k and pair accuracy), `base_model`, `datasets`,
    `license`, tags; the loss it was trained with, by name and formula; the comparison with the baselines; how to
    score comments with it (`text_pair`: the model reads (post, comment) text pairs, as encoders do).

    `results` maps a ranker ("model", "random", "longest_first") to `commentrank.metrics.ranking_metrics`;
    `evaluation` (`commentrank.score.report.evaluation_details`), when given, adds the bootstrap intervals, the
    paired model-minus-baseline verdicts and the length-controlled metrics (also read from `results` when a
    ranker's metrics hold them, as the training callback's do). `split`: the split evaluated on; None (a raw file or
    a saved Dataset, which have no splits) names none, in the metadata or the text. `dtype`: the precision the
    results were scored in (the training callback scores in the model's, float32 on CPU; `score.py --dtype auto`
    in bfloat16 where the hardware has it, which moves NDCG@5 by up to ~0.002), stated beside the counts.
    """
    if loss_type is not None and loss_type not in LOSSES:
        raise ValueError(f"unknown loss_type '{loss_type}' (choose from {', '.join(LOSSES)})")
    loss = LOSSES.get(loss_type)
    trained = f" with the **{loss.name}** loss `{loss.formula}`: {loss.description}" if loss else ""
    settings = settings or EncoderSettings()
    dataset_name = display_name(dataset) if dataset else None
    model_metrics = (results or {}).get("model") or {}
    length_controlled = _length_controlled(results or {}, evaluation or {})
    evals = eval_results({**model_metrics, **length_controlled.get("model", {})}, dataset_name or "unknown", split)
    card_data = ModelCardData(
        model_name=model_id.split("/")[-1], base_model=hub_model_id(base_model),
        datasets=[dataset_name] if dataset_name else None, license=license, library_name="transformers",
        pipeline_tag="text-classification",
        tags=list(dict.fromkeys([*REWARD_TAGS, *([loss_type] if loss else []), *(tags or [])])),
        metrics=sorted({r.metric_type for r in evals}) or None, eval_results=evals or None,
    )  # fmt: skip
    sections = [
        f"# {model_id.split('/')[-1]}",
        "",
        "A reward model that **ranks the comments under a post**: it gives each (post, comment) pair one scalar "
        f"reward, and a post's comments are ordered by decreasing reward. Fine-tuned from {_base_text(base_model)} "
        f"with commentrank on TRL{trained}.",
        "",
        "## Evaluation",
        "",
    ]
    if model_metrics:
        n_posts, n_comments = model_metrics.get("n_posts"), model_metrics.get("n_comments")
        facts = [f"split `{split}`"] if split else []
        facts += [f"{int(n_posts)} posts, {int(n_comments)} comments"] if n_posts and n_comments else []
        facts += [f"scored in {dtype}"] if dtype else []
        facts_text = f" ({', '.join(facts)})" if facts else ""
        sections += [
            f"On `{dataset_name or 'the evaluation data'}`{facts_text}, against a random ranking "
            "(averaged over seeds) and the longest comment first. NDCG@k uses linear gain with relevance "
            "`n - 1 - rank` (votes: `votes - min`); pair accuracy counts the label-ordered pairs ranked right.",
            "",
            *_evaluation_lines(results, evaluation or {}, length_controlled),
        ]
    else:
        sections += ["No evaluation results were recorded.", ""]
    sections += [
        "## Usage",
        "",
        usage_snippet(model_id, text_pair, settings.max_length, settings.separator, settings.length_weight),
    ]
    if training:
        sections += ["## Training", "", _training_table({"loss_type": loss_type, **training}), ""]
    return _card(card_data, sections + _data_section(dataset_name))


def build_sft_card(
    *, model_id: str, base_model: str, dataset: str | None, training: dict, merged: bool, output_dir: str
) -> ModelCard:
    """An SFT model's card: base model, data, the settings that matter and the final losses (`training`), and the
    command of the next stage (a reward model started from this checkpoint)."""
    dataset_name = display_name(dataset) if dataset else None
    card_data = ModelCardData(
        model_name=model_id.split("/")[-1], base_model=hub_model_id(base_model),
        datasets=[dataset_name] if dataset_name else None, library_name="transformers",
        pipeline_tag="text-generation", tags=[*SFT_TAGS, *(["lora-merged"] if merged else [])],
    )  # fmt: skip
    sections = [
        f"# {model_id.split('/')[-1]}",
        "",
        f'Causal-LM fine-tuning of {_base_text(base_model)} on ranked comments (`prompt + "\\n\\n" + comment`), the '
        "SFT stage of the CUP IT recipe, trained with commentrank's `scripts/sft.py` on TRL's `SFTTrainer`.",
        "",
        "## Training",
        "",
        _training_table(training),
        "",
        "Next stage, a reward model started from this checkpoint (a one-label sequence-classification head is added):",
        "",
        "```bash",
        f"python scripts/reward.py --config recipes/<model>/reward_no_context.yaml --model_name_or_path {output_dir}",
        "```",
        "",
    ]
    return _card(card_data, sections + _data_section(dataset_name))


def save_model_card(card: ModelCard, output_dir: str | os.PathLike) -> Path:
    """Write the card as `README.md` of the model folder, atomically."""
    path = Path(output_dir) / "README.md"
    atomic_write_text(path, str(card))
    return path


TRAINING_FACTS_FILE = "training_facts.json"  # what a model folder records about its training (the card's facts)


def training_facts(
    *,
    loss_type: str | None,
    base_model: str | None,
    dataset: str | None,
    prompt_template: str | None = None,
    split: str | None = None,
    results: dict | None = None,
    dtype: str | None = None,
) -> dict:
    """The facts a reward model's card is built from, as training records them in `TRAINING_FACTS_FILE`: the loss,
    the base model (its Hub id; None for a local folder, whose path is never published), the data (as the card
    shows it), the prompt template, the evaluation split, its results and the precision they were scored in."""
    return {
        "loss_type": loss_type,
        "base_model": hub_model_id(base_model),
        "dataset": display_name(dataset) if dataset else None,
        "prompt_template": prompt_template,
        "split": split,
        "results": results or {},
        "dtype": dtype,
    }


def save_training_facts(facts: dict, folder: str | os.PathLike) -> Path:
    path = Path(folder) / TRAINING_FACTS_FILE
    atomic_write_text(path, json.dumps(facts, indent=2, default=str) + "\n")
    return path


def read_training_facts(model_path: str | os.PathLike) -> dict:
    """The facts a model folder recorded (`TRAINING_FACTS_FILE`, written by training; never its README.md, which the
    user may have edited); empty for a folder without them (a Hub id, or a model not trained by commentrank)."""
    path = Path(model_path) / TRAINING_FACTS_FILE
    if not path.is_file():
        return {}
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("%s is unreadable (%s): the card will not name the loss and base model", path, err)
        return {}
    if not isinstance(facts, dict):
        return {}
    if facts.get("loss_type") not in (None, *LOSSES):
        facts["loss_type"] = None
    return facts
