"""Score and rank every comment of every post with a reward model; NDCG report against the baselines.

Usage:

    # the quickstart model on the test split of the quickstart data
    python scripts/score.py --model outputs/quickstart/reward --dataset outputs/quickstart/data \
        --output_dir outputs/quickstart/scores

    # a ranked or unlabeled CUP IT file (score: null), a Posts.xml or CSV file, or a Hub dataset id
    python scripts/score.py --model outputs/quickstart/reward --dataset test.jsonl --output_dir scores --skip_invalid

    # publish the model with a card holding the NDCG results (token: HF_TOKEN or `hf auth login`)
    python scripts/score.py --model outputs/quickstart/reward --dataset outputs/quickstart/data \
        --output_dir outputs/quickstart/scores --push_to_hub me/minilm-comment-rm

Writes `predictions.jsonl` (CUP IT submission shape: each comment with `reward` and `score` = predicted rank,
0 = best, comments in input order); with labels also `metrics.json` (NDCG@1..5, pair accuracy, posts, the random
and longest-first baselines), `report.md` and `ndcg_at_k.png`. Inputs longer than `max_length` are truncated
(the comment's tail first) and counted.
"""

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from commentrank.data.loading import load_scoring_data
from commentrank.score.report import evaluate_rewards, markdown_table, write_outputs
from commentrank.score.scorer import load_scorer, read_encoder_settings

logger = logging.getLogger("commentrank.score")


@dataclass
class ScoreConfig:
    model: str = field(metadata={"help": "Reward model folder (e.g. the output of scripts/reward.py) or Hub id."})
    dataset: str = field(
        metadata={"help": "CUP IT .jsonl[.gz] / Posts.xml / .csv file, data_prep output folder, or Hub dataset id."}
    )
    output_dir: str = field(metadata={"help": "Folder for predictions.jsonl, metrics.json, report.md and the plot."})
    split: str = field(default="test", metadata={"help": "Split of a folder or Hub dataset (else 'unlabeled')."})
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "Prompt of raw files: '{title}' or '{title}\\n\\n{body}' (default: the model's own)."},
    )
    skip_invalid: bool = field(default=False, metadata={"help": "Skip and count invalid posts instead of stopping."})
    max_posts: int | None = field(default=None, metadata={"help": "Score only the first N posts."})
    max_length: int | None = field(default=None, metadata={"help": "Token limit per input (default: the model's)."})
    batch_size: int = field(default=32, metadata={"help": "Inputs per forward pass."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1..."})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16."})
    n_seeds: int = field(default=20, metadata={"help": "Seeds the random baseline is averaged over."})
    no_progress: bool = field(default=False, metadata={"help": "Hide the progress bar."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub model repo to upload model + card to."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    base_model: str | None = field(
        default=None, metadata={"help": "Base model named in the card (default: read from the model's card)."}
    )
    license: str = field(default="apache-2.0", metadata={"help": "License in the card's metadata."})


def publish(config: ScoreConfig, scorer, data, results) -> str:
    from commentrank.model_card import base_model_of, build_model_card, push_to_hub, stage_model_folder

    staged = Path(config.output_dir) / "hub_model"
    card = build_model_card(
        model_id=config.push_to_hub, base_model=config.base_model or base_model_of(config.model),
        dataset=config.dataset, results=results or {}, split=data.split or "test", license=config.license,
        text_pair=scorer.encoder.encoder, max_length=scorer.encoder.max_length, separator=scorer.encoder.separator,
    )  # fmt: skip
    stage_model_folder(config.model, staged, scorer=scorer, card=card)
    logger.info("staged the upload (model, tokenizer, encoder settings, card) in %s", staged)
    return push_to_hub(staged, config.push_to_hub, private=config.hub_private)


def run(config: ScoreConfig) -> dict:
    settings = read_encoder_settings(config.model)
    template = config.prompt_template or settings["prompt_template"]
    data = load_scoring_data(config.dataset, config.split, template, config.skip_invalid, config.max_posts)
    if data.skipped:
        logger.warning("skipped invalid posts: %s", data.skipped)
    scorer = load_scorer(config.model, config.max_length, config.device, config.dtype, settings)
    n_comments = sum(len(row["comments"]) for row in data.rows)
    start = time.perf_counter()
    rewards, n_truncated = scorer.score(data.rows, config.batch_size, progress=not config.no_progress)
    elapsed = time.perf_counter() - start
    if n_truncated:
        logger.warning(
            "%d of %d inputs were longer than %d tokens and truncated",
            n_truncated,
            n_comments,
            scorer.encoder.max_length,
        )
    results = evaluate_rewards(data.rows, rewards, config.n_seeds)
    info = {
        "model": config.model, "dataset": config.dataset, "split": data.split, "n_posts": len(data.rows),
        "n_comments": n_comments, "n_truncated": n_truncated, "max_length": scorer.encoder.max_length,
        "skipped": data.skipped, "n_seeds": config.n_seeds, "seconds": round(elapsed, 3), "comments_per_s": round(n_comments / max(elapsed, 1e-9), 1),
    }  # fmt: skip
    written = write_outputs(config.output_dir, data.rows, rewards, results, info)
    print(f"scored {n_comments} comments of {len(data.rows)} posts in {elapsed:.1f}s ({n_truncated} truncated)")
    if results is None:
        print("no labels: predictions only")
    else:
        print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in written))
    if config.push_to_hub:
        repo_id = publish(config, scorer, data, results)
        print(f"uploaded to https://huggingface.co/{repo_id}")
    return {"results": results, **info}


def main(argv: list[str] | None = None) -> dict:
    from trl import TrlParser

    from commentrank.data.validation import InvalidInputError

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (config,) = TrlParser([ScoreConfig]).parse_args_and_config(argv)
    try:
        return run(config)
    except (InvalidInputError, FileNotFoundError, ValueError, RuntimeError, json.JSONDecodeError) as err:
        raise SystemExit(f"score: error: {err}") from None


if __name__ == "__main__":
    main()
