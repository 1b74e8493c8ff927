"""Print the baseline rankers' NDCG on the posts of a split (random, averaged over seeds, and longest-first).

Usage:

    python scripts/baselines.py --dataset outputs/quickstart/data --split test
    python scripts/baselines.py --dataset data/stackexchange/se_ranked.jsonl.gz --skip_invalid

The dataset is read as `scripts/score.py` reads it: a data_prep folder (its listwise view), a raw ranked file or a
Hub dataset id.
"""

from commentrank.cli import ArgumentParser
from commentrank.data.loading import load_scoring_rows
from commentrank.io_utils import exits_on_bad_input
from commentrank.metrics import baseline_metrics
from commentrank.score.report import labeled_posts, markdown_table


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser("baselines", __doc__)
    parser.add_argument("--dataset", required=True, help="data_prep folder, raw ranked file or Hub dataset id.")
    parser.add_argument("--split", default="test", help="Split of a folder or Hub dataset (else 'unlabeled').")
    parser.add_argument("--skip_invalid", action="store_true", help="Skip and count invalid posts.")
    parser.add_argument("--n_seeds", type=int, default=20, help="Seeds the random baseline is averaged over.")
    args = parser.parse_args(argv)
    if args.n_seeds < 1:
        parser.error(f"n_seeds must be at least 1, got {args.n_seeds}")
    with exits_on_bad_input("baselines"):
        data = load_scoring_rows(args.dataset, args.split, skip_invalid=args.skip_invalid)
        posts = labeled_posts(data.rows)
        if not posts:
            raise ValueError(f"{args.dataset}: no labeled posts with two or more comments")
    results = baseline_metrics(posts, n_seeds=args.n_seeds)
    split = f" of split '{data.split}'" if data.split else ""
    print(f"{len(posts)} labeled posts{split}\n")
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
