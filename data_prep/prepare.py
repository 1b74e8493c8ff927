"""Turn ranked comment lists into the pairwise, listwise and sft datasets, split by post.

Usage:

    # the shipped Stack Exchange sample, with a recipe
    python data_prep/prepare.py --config recipes/quickstart/data.yaml

    # any CUP IT JSONL / Posts.xml / CSV / Parquet file or Hub dataset id, options on the command line
    python data_prep/prepare.py --inputs data/stackexchange/se_ranked.jsonl.gz --output_dir data/prepared \
        --pair_strategy all --prompt_template $'{title}\n\n{body}' --skip_invalid

    # push the three views to a Hub dataset repo (token from `hf auth login` or HF_TOKEN)
    python data_prep/prepare.py --config recipes/quickstart/data.yaml --push_to_hub you/cup-it-pairs

The run prints a summary (posts and comments read, kept, dropped by reason; pairs per strategy) and saves it as
`summary.json` next to the views. Also installed as the `commentrank-prepare` command.
"""

from commentrank.data.prepare import main

if __name__ == "__main__":
    main()
