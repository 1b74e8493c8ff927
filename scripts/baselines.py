"""Print the baseline rankers' NDCG on a listwise split (random, averaged over seeds, and longest-first).

Usage:

    python scripts/baselines.py --dataset outputs/quickstart/data --split test
"""

import argparse

import datasets

from commentrank.metrics import baseline_metrics
from commentrank.score.report import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="Folder written by data_prep (its listwise view is read).")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    rows = datasets.load_from_disk(f"{args.dataset}/listwise")[args.split]
    results = baseline_metrics(list(rows))
    print(f"{len(rows)} posts of split '{args.split}'\n")
    print(markdown_table(results))


if __name__ == "__main__":
    main()
