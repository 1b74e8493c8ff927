"""Export a reward model to ONNX (float32 and dynamically quantized int8) for serving without PyTorch.

Usage:

    python scripts/export.py --model outputs/quickstart/reward --output_dir outputs/quickstart/onnx \
        --dataset outputs/quickstart/data --split validation

    # then score with it exactly as with the PyTorch model (onnxruntime; --onnx_file model_int8.onnx: int8)
    python scripts/score.py --model outputs/quickstart/onnx --dataset outputs/quickstart/data --output_dir scores

The output folder holds `model.onnx`, `model_int8.onnx`, the tokenizer, `config.json`, `commentrank_config.json` (the
encoder settings, so inputs are encoded as in training) and `parity.md`: on the `--dataset` posts, NDCG@5 (over the
labeled posts with 2+ comments) and the Spearman correlation of each exported model's rewards with the PyTorch float32
model's, and comments per second.
"""

import logging
import time

import numpy as np
from scipy.stats import spearmanr

from commentrank.cli import Parser
from commentrank.configs import ExportArguments
from commentrank.io_utils import atomic_write_text, exits_on_bad_input
from commentrank.metrics import ranking_metrics
from commentrank.outputs import OutputDir, check_output_dir
from commentrank.score.exported import INT8_FILE, ONNX_FILE, OnnxRewardModel, export_onnx, quantize_int8
from commentrank.score.report import labeled_posts, markdown_table
from commentrank.score.scorer import Scorer, load_scorer

logger = logging.getLogger("commentrank.export")


def parity_table(scorers: dict[str, Scorer], rows: list[dict], batch_size: int) -> str:
    """NDCG@5 (- when no post is labeled), reward Spearman against the first scorer, and comments/s of each scorer on
    the same posts."""
    results, reference = {}, None
    n_comments = sum(len(row["comments"]) for row in rows)
    for name, scorer in scorers.items():
        start = time.perf_counter()
        rewards, _ = scorer.score(rows, batch_size)
        seconds = time.perf_counter() - start
        flat = np.concatenate([np.asarray(r, dtype=np.float64) for r in rewards])
        reference = flat if reference is None else reference
        labeled = labeled_posts(rows, rewards)
        ndcg = ranking_metrics(labeled)["ndcg@5"] if labeled else None  # None: shown as -
        results[name] = {"ndcg@5": ndcg, "spearman_vs_pytorch": float(spearmanr(reference, flat)[0]),
                         "max_abs_diff": float(np.abs(reference - flat).max()),
                         "comments/s": n_comments / seconds}  # fmt: skip
    return markdown_table(results, ("ndcg@5", "spearman_vs_pytorch", "max_abs_diff", "comments/s"))


def main(argv=None) -> str:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (args,) = Parser([ExportArguments], prog="export").parse_args_and_config(argv)
    with exits_on_bad_input("export"):
        check_output_dir(args.output_dir, "onnx_export", inputs=[args.model], overwrite=args.overwrite_output)
        scorer = load_scorer(args.model, device="cpu", dtype="float32", allow_pickle=args.allow_pickle_weights)
        if isinstance(scorer.model, OnnxRewardModel):
            raise ValueError(f"{args.model} is already an exported ONNX model: export takes a PyTorch reward model")
        rows = None
        if args.dataset:
            from commentrank.data.loading import load_scoring_rows

            rows = load_scoring_rows(
                args.dataset, args.split, scorer.settings.prompt_template, max_posts=args.max_posts
            )
        with OutputDir(args.output_dir, "onnx_export", inputs=[args.model], overwrite=args.overwrite_output) as tmp:
            start = time.perf_counter()
            export_onnx(
                scorer.model, scorer.encoder.tokenizer, tmp / ONNX_FILE, scorer.encoder.segment_sep_id is not None
            )
            files = [ONNX_FILE]
            if args.int8:
                quantize_int8(tmp / ONNX_FILE, tmp / INT8_FILE)
                files.append(INT8_FILE)
            logger.info("exported %s in %.1f s", ", ".join(files), time.perf_counter() - start)
            scorer.encoder.tokenizer.save_pretrained(tmp)
            scorer.model.config.save_pretrained(tmp)
            scorer.settings.save(tmp)
            report = f"# ONNX export of `{args.model}`\n\nFiles: {', '.join(files)}.\n"
            if rows is not None:
                scorers = {"pytorch float32": scorer}
                scorers |= {
                    f"onnx {name}": Scorer(OnnxRewardModel(tmp / name), scorer.encoder, name) for name in files
                }
                table = parity_table(scorers, rows.rows, args.batch_size)
                n_evaluated = len(labeled_posts(rows.rows))
                over = (f"NDCG@5 over the {n_evaluated} labeled posts with 2+ comments among them" if n_evaluated
                        else "no labeled post with 2+ comments among them: no NDCG@5 (-)")  # fmt: skip
                report += (
                    f"\nOn {len(rows.rows)} posts of `{args.dataset}` ({rows.split or 'all'}); {over}:\n\n{table}\n"
                )
                print(table)
            else:
                report += "\nNo parity table: give `--dataset` to compare the exported models with PyTorch.\n"
            atomic_write_text(tmp / "parity.md", report)
    print(f"wrote {args.output_dir}")
    return args.output_dir


if __name__ == "__main__":
    main()
