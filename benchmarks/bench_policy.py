"""Comment writers judged by a reward model on held-out posts: a starting policy against trained ones (e.g. before
and after `scripts/grpo.py`, with and without a length penalty), greedy comments, the report of `commentrank.policy`.

Usage:

    OMP_NUM_THREADS=2 python benchmarks/bench_policy.py --reward_model outputs/quickstart/reward \
        --dataset_name outputs/quickstart/data \
        --policies before=bundled:smollm2 after=outputs/smollm2/grpo penalty=outputs/smollm2/grpo_lp

Each policy writes one greedy comment for each of the first `--posts` posts of `--split`; the report gives each one's
reward (length term included), length-free reward, length in characters and the share of posts where its comment
beats the post's real best comment under the reward model, with 95% bootstrap intervals over posts, and each policy
minus the first (paired, on the same resampled posts); a few example generations. The table goes to stdout and to
`--output` (default benchmarks/results/policy.md: its generated part, the authors' text kept; a .json beside it).
`scripts/grpo.py` writes the same report after training (`policy_report.md` in its output folder).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from commentrank.bundled_models import resolve_model_path
from commentrank.configs import PolicyReportOptions
from commentrank.io_utils import atomic_write_text
from commentrank.policy import generate, held_out_posts, policy_prompt, policy_report, report_markdown
from commentrank.score.reward_function import RewardFunction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_file import write_generated  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = PolicyReportOptions(reward_model="")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward_model", required=True)
    parser.add_argument("--dataset_name", required=True)
    parser.add_argument("--policies", nargs="+", required=True, help="name=model pairs; the first is the reference")
    parser.add_argument("--split", default=DEFAULTS.report_split)
    parser.add_argument("--posts", type=int, default=DEFAULTS.report_posts)
    parser.add_argument("--instruction", default=DEFAULTS.instruction)
    parser.add_argument("--chat", type=lambda s: s.lower() == "true", default=DEFAULTS.chat)
    parser.add_argument("--max_new_tokens", type=int, default=DEFAULTS.report_max_new_tokens)
    parser.add_argument("--batch_size", type=int, default=DEFAULTS.report_batch_size)
    parser.add_argument("--n_bootstrap", type=int, default=DEFAULTS.n_bootstrap)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "policy.md"))
    args = parser.parse_args(argv)

    policies = dict(p.split("=", 1) for p in args.policies)
    posts = held_out_posts(args.dataset_name, args.split, args.posts)
    prompts = [policy_prompt(p["prompt"], args.instruction, args.chat) for p in posts]
    systems, timing = {}, {}
    for name, path in policies.items():
        path = resolve_model_path(path)
        tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
        start = time.perf_counter()
        out = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        timing[name] = round(time.perf_counter() - start, 1)
        systems[name] = [c[0] for c in out]
        print(f"{name}: {len(posts)} comments in {timing[name]} s")
    report = policy_report(RewardFunction(args.reward_model), posts, systems, n_resamples=args.n_bootstrap)
    report["generation_s"] = timing
    text = report_markdown(report, title="Comment writers under the reward model")
    # the generated part of the results file (the authors' text around it kept), the full report as JSON beside it
    written = write_generated(args.output, Path(__file__).name, text, title="Policies under the reward model")
    atomic_write_text(written.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
