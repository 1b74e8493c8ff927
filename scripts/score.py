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
0 = best, comments in input order) and `metrics.json` (the counts below; with labels also NDCG@1..5, pair accuracy
and the random and longest-first baselines under `results`, null without labels); with labels also `report.md` and
`ndcg_at_k.png`. Inputs longer than `max_length` are truncated (the comment's tail first) and counted; a comment
repeated under the same prompt is scored once, every copy getting that reward (copies tie: input order). A non-finite
reward stops the run before anything is written. In metrics.json, `n_posts` / `n_comments` count every post scored
(unlabeled and one-comment posts too), `results.<ranker>.n_posts` / `n_comments` the posts evaluated (labeled, 2+
comments); `skipped` counts the invalid posts read (`--skip_invalid`) and `duplicate_texts` the repeated texts of
the posts scored (with `--max_posts` reading stops at the last post scored: read = scored + skipped);
`collapse_warning` is the scorer's collapse warning (None: none), also in `warnings` with the data's warnings.
"""

import logging
import os
import tempfile
import time
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from commentrank.configs import ScoreArguments
from commentrank.data.loading import MODEL_TEMPLATE, load_scoring_rows
from commentrank.inference import merge_shards
from commentrank.io_utils import exits_on_bad_input
from commentrank.outputs import OutputDir, check_output_dir
from commentrank.score.report import PLOT_NAME, collapse_warning, evaluate, markdown_table, write_outputs
from commentrank.score.scorer import load_scorer

logger = logging.getLogger("commentrank.score")
OUTPUT_FILES = ("predictions.jsonl", "metrics.json", "report.md", PLOT_NAME)  # the last 2 with labels only


def publish(config: ScoreArguments, scorer, data, results, details) -> str:
    from commentrank.hub import push_model_folder, stage_model_folder
    from commentrank.model_card import build_model_card, read_training_facts

    facts = read_training_facts(config.model)  # what the model folder recorded about its training, if anything
    card = build_model_card(
        model_id=config.push_to_hub, base_model=config.base_model or facts.get("base_model"), dataset=config.dataset,
        results=results or {}, split=data.split, license=config.license, loss_type=facts.get("loss_type"),
        text_pair=scorer.encoder.text_pair, settings=scorer.settings, evaluation=details, dtype=scorer.dtype,
    )  # fmt: skip
    out = Path(config.output_dir).resolve()  # staged beside the scores, then removed (a kill's: by the next run)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-{os.getpid()}-hub-", dir=out.parent) as staged:
        stage_model_folder(config.model, Path(staged) / "model", scorer=scorer, card=card)
        return push_model_folder(Path(staged) / "model", config.push_to_hub, private=config.hub_private)


def run(config: ScoreArguments) -> dict:
    # One process, or one of `accelerate launch`'s: each scores a share of the batches (gloo on CPU-only machines)
    state = PartialState(cpu=config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()))
    ours = dict(inputs=[config.dataset, config.model], overwrite=config.overwrite_output, entries=OUTPUT_FILES)
    check_output_dir(config.output_dir, "scores", **ours)  # before any work: never replace what we did not write
    if config.push_to_hub:  # its token too
        from commentrank.hub import hub_token

        hub_token(config.push_to_hub)
    device = state.device if config.device == "auto" and state.num_processes > 1 else config.device
    device = "cpu" if str(device).startswith("cpu") else device
    scorer = load_scorer(config.model, config.max_length, device, config.dtype, config.allow_pickle_weights,
                         config.onnx_file)  # fmt: skip
    logger.info("scoring in %s (%s)", scorer.dtype, scorer.dtype_reason)
    # the template: asked for, else the model's own (a model without settings has none: the data's, or "{title}")
    own = scorer.settings.prompt_template if scorer.settings_saved else None
    template = config.prompt_template or own
    asked_by = "" if config.prompt_template else MODEL_TEMPLATE  # who chose the template, for a mismatch's message
    data = load_scoring_rows(config.dataset, config.split, template, config.skip_invalid, config.max_posts, asked_by)
    if config.prompt_template and own and config.prompt_template != own:
        data.warnings.append(f"prompt_template {config.prompt_template!r} is not the one the model was trained with "
                             f"({own!r}): its rewards are for other inputs than it learned")  # fmt: skip
        logger.warning(data.warnings[-1])
    n_comments = sum(len(row["comments"]) for row in data.rows)
    start = time.perf_counter()
    shard = (state.process_index, state.num_processes)
    progress = not config.no_progress and state.is_main_process
    rewards, n_truncated = scorer.score(data.rows, config.batch_size, progress=progress, shard=shard)
    if state.num_processes > 1:
        rewards = merge_shards(gather_object([rewards]))
    elapsed = time.perf_counter() - start
    if not state.is_main_process:  # the main process writes the outputs
        return {}
    if n_truncated:
        logger.warning("%d of %d inputs were longer than %d tokens and truncated", n_truncated, n_comments,
                       scorer.encoder.max_length)  # fmt: skip
    results, details = evaluate(data.rows, rewards, config.n_seeds, n_bootstrap=config.n_bootstrap)
    warning = collapse_warning(data.rows, rewards, scorer.settings.length_weight)
    if warning:
        logger.warning(warning)
    info = {
        "model": config.model, "dataset": config.dataset, "split": data.split, "prompt_template": data.prompt_template,
        "n_posts": len(data.rows), "n_comments": n_comments, "n_truncated": n_truncated,
        "max_length": scorer.encoder.max_length, "dtype": scorer.dtype, "skipped": dict(data.summary.posts_dropped),
        "duplicate_texts": data.summary.duplicate_texts, "n_seeds": config.n_seeds, "seconds": round(elapsed, 3),
        "comments_per_s": round(n_comments / max(elapsed, 1e-9), 1),
        "warnings": data.warnings + ([warning] if warning else []), "collapse_warning": warning,
    }  # fmt: skip
    with OutputDir(config.output_dir, "scores", **ours) as tmp:  # the whole set lands at once
        written = write_outputs(tmp, data.rows, rewards, results, info, details)
    print(f"scored {n_comments} comments of {len(data.rows)} posts in {elapsed:.1f}s ({n_truncated} truncated)")
    if info["skipped"]:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in info["skipped"].items())
        print(f"skipped {sum(info['skipped'].values())} invalid posts ({reasons})")
    if results is None:
        print("no labels: predictions and counts only")
    else:
        print(markdown_table(results, intervals=details.get("intervals")))
    print(f"wrote {', '.join(written)} to {config.output_dir}")
    if config.push_to_hub:
        from commentrank.hub import repo_url

        repo_id = publish(config, scorer, data, results, details)
        print(f"uploaded to {repo_url(repo_id)}")
    return {"results": results, **info}


def main(argv: list[str] | None = None) -> dict:
    from commentrank.cli import Parser

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (config,) = Parser([ScoreArguments], prog="score").parse_args_and_config(argv)
    with exits_on_bad_input("score", RuntimeError):
        return run(config)


if __name__ == "__main__":
    main()
