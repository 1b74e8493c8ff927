"""Best-of-n: a causal LM samples n comments for each held-out post, the commentrank reward model keeps the one it
ranks first.

Usage:

    # SmolLM2-135M-Instruct (bundled), 8 samples for each of 32 test posts, judged by the quickstart reward model
    python scripts/best_of_n.py --reward_model outputs/quickstart/reward --dataset_name outputs/quickstart/data \
        --n 8 --output_dir outputs/best_of_n

    # a GRPO policy, with a length penalty in the choice
    python scripts/best_of_n.py --model_name_or_path outputs/smollm2/grpo --reward_model outputs/quickstart/reward \
        --length_penalty 0.3 --output_dir outputs/best_of_n_grpo

Writes `generations.jsonl` (each post's n comments, their rewards and the one kept) and the report `best_of_n.md` /
`.json`: one sample (the first of the n: what the LM writes alone) against the best of n, under the reward model
(reward, length-free reward, length, the share of posts where the comment beats the real best), each with its 95%
bootstrap interval, best-of-n minus one sample paired. As `scripts/grpo.py`'s report (`commentrank.policy`).
"""

import json
import logging
import time

from transformers import AutoModelForCausalLM, AutoTokenizer

from commentrank.bundled_models import resolve_model_path
from commentrank.cli import Parser
from commentrank.configs import BestOfNArguments
from commentrank.io_utils import exits_on_bad_input
from commentrank.modeling import check_weights_format
from commentrank.outputs import OutputDir, check_output_dir
from commentrank.policy import (
    best_of,
    generate,
    held_out_posts,
    policy_prompt,
    policy_report,
    reward_template,
    write_report,
)
from commentrank.score.reward_function import RewardFunction

logger = logging.getLogger("commentrank.best_of_n")


def make_parser() -> Parser:
    return Parser((BestOfNArguments,), prog="best_of_n")


def main(argv=None) -> dict:
    (args,) = make_parser().parse_args_and_config(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    with exits_on_bad_input("best_of_n"):  # a missing folder: one line
        model_path = resolve_model_path(args.model_name_or_path)
    with exits_on_bad_input("best_of_n"):
        check_output_dir(args.output_dir, "best_of_n", inputs=[args.dataset_name, model_path, args.reward_model],
                         overwrite=args.overwrite_output)  # fmt: skip
        check_weights_format(model_path, args.allow_pickle_weights)
        reward = RewardFunction(args.reward_model, length_penalty=args.length_penalty,
                                allow_pickle=args.allow_pickle_weights)  # fmt: skip
        posts = held_out_posts(args.dataset_name, args.report_split, args.report_posts, **reward_template(reward))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=args.dtype)

    start = time.perf_counter()
    prompts = [policy_prompt(p["prompt"], args.instruction, args.chat) for p in posts]
    samples = generate(model, tokenizer, prompts, n=args.n, max_new_tokens=args.report_max_new_tokens, do_sample=True,
                       temperature=args.temperature, top_p=args.top_p, batch_size=args.report_batch_size,
                       seed=args.seed)  # fmt: skip
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    flat_posts = [p["prompt"] for p, s in zip(posts, samples) for _ in s]
    flat = reward(prompts=flat_posts, completions=[c for s in samples for c in s])
    rewards = [flat[i * args.n : (i + 1) * args.n] for i in range(len(posts))]
    kept = best_of(rewards)
    rank_s = time.perf_counter() - start
    systems = {"one sample": [s[0] for s in samples], f"best of {args.n}": [s[k] for s, k in zip(samples, kept)]}
    report = policy_report(reward, posts, systems, n_resamples=args.n_bootstrap)
    report["timing_s"] = {"generate": round(generate_s, 1), "rank": round(rank_s, 1)}
    inputs = [args.dataset_name, model_path, args.reward_model]
    with OutputDir(args.output_dir, "best_of_n", inputs=inputs, overwrite=args.overwrite_output) as tmp:
        rows = [{"post": p["prompt"], "comments": s, "rewards": r, "kept": k}
                for p, s, r, k in zip(posts, samples, rewards, kept)]  # fmt: skip
        (tmp / "generations.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        path = write_report(report, tmp, name="best_of_n", title=f"Best of {args.n} under the reward model")
        print(path.read_text(encoding="utf-8"))
    logger.info("best-of-%d: %d posts, generation %.1f s, ranking %.1f s", args.n, len(posts), generate_s, rank_s)
    return report


if __name__ == "__main__":
    main()
