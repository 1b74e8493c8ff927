"""A comment writer (a causal LM) judged by a reward model: prompts, generation, and the before/after report that
`scripts/grpo.py`, `scripts/best_of_n.py` and `benchmarks/bench_policy.py` write.

The report compares systems (e.g. the policy before and after GRPO, or one sample against the best of n) on the same
held-out posts, under the reward model, with 95% bootstrap intervals over posts (`commentrank.intervals`):

- `reward`: the reward model's reward of the generated comment, its length term included (what GRPO maximizes
  without shaping);
- `length_free_reward`: the model's own part, without the length term (a longer comment cannot raise it through that
  term): if `reward` rises and this does not, the policy learned to write longer, not better;
- `chars`: the comment's length in characters;
- `beats_best`: the share of posts where the generated comment's reward is above that of the post's real best
  comment (rank 0).

Each system's interval, and each system minus the reference (paired: both on the same resampled posts).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from commentrank.intervals import bootstrap_interval, paired_difference_interval
from commentrank.length import add_length_term
from commentrank.metrics import PostStats

DEFAULT_INSTRUCTION = "Write a short, helpful answer to this question.\n\n{post}"
METRICS = ("reward", "length_free_reward", "chars", "beats_best")
METRIC_NAMES = {"reward": "reward", "length_free_reward": "length-free reward", "chars": "characters",
                "beats_best": "beats the real best"}  # fmt: skip


def policy_prompt(post: str, instruction: str = DEFAULT_INSTRUCTION, chat: bool = True):
    """The policy's prompt for a post: the instruction with `{post}` filled, as one user message (`chat`) or text."""
    text = instruction.format(post=post)
    return [{"role": "user", "content": text}] if chat else text


def reward_template(reward_fn, asked: str | None = None) -> dict:
    """The `open_ranked_data` options that build the posts' prompts as the reward model was trained on them: the
    template `asked` (a script's `--prompt_template`), else the one the reward model saved; a data_prep folder built
    with another is refused, naming which (`loading.check_prompt_template`)."""
    from commentrank.data.loading import MODEL_TEMPLATE

    if asked is not None or not reward_fn.scorer.settings_saved:
        return {"prompt_template": asked}
    return {"prompt_template": reward_fn.settings.prompt_template, "asked_by": MODEL_TEMPLATE}


def held_out_posts(dataset_name: str, split: str = "test", n: int | None = 32, **open_kwargs) -> list[dict]:
    """The first `n` posts of a split of ranked data (a data_prep folder, raw file or Hub dataset): each with its
    `prompt` (as the reward model was trained on it) and its real `best` comment (rank 0). A raw file is split as
    training splits it (`open_ranked_data`: data_prep's default seed, whatever the run's seed)."""
    from commentrank.data.loading import open_ranked_data
    from commentrank.train.steps import split_of

    data = open_ranked_data(dataset_name, **open_kwargs)
    rows = split_of(data.require_view("listwise"), split, data.source)
    rows = rows.select(range(min(n, len(rows)))) if n else rows
    return [{"prompt": r["prompt"], "best": r["comments"][int(np.argmin(r["ranks"]))]} for r in rows]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence,
    *,
    n: int = 1,
    max_new_tokens: int = 48,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
) -> list[list[str]]:
    """`n` completions per prompt (chat messages go through the tokenizer's chat template), decoded without special
    tokens and stripped. Greedy by default (deterministic: the report's setting); sampled with `do_sample`, seeded."""
    if n > 1 and not do_sample:
        raise ValueError("n > 1 completions per prompt need do_sample (greedy decoding gives n copies)")
    torch.manual_seed(seed)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if not isinstance(p, str) else p
        for p in prompts
    ]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[str]] = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)  # fmt: skip
            sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=n,
                                 pad_token_id=tokenizer.pad_token_id, do_sample=do_sample, **sampling)  # fmt: skip
            decoded = tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            decoded = [text.strip() for text in decoded]
            out += [decoded[i : i + n] for i in range(0, len(decoded), n)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def judge(reward_fn, posts: Sequence[str], comments: Sequence[str]) -> tuple[list[float], list[float]]:
    """(reward with the length term, length-free reward) of each (post, comment) under `reward_fn`'s model (its
    shaping left out)."""
    free = type(reward_fn)(reward_fn.scorer, length_free=True, batch_size=reward_fn.batch_size,
                           device=reward_fn.device).model_rewards(posts, comments)  # fmt: skip
    return add_length_term(free, comments, reward_fn.settings.length_weight), free


def best_of(rewards: Sequence[Sequence[float]]) -> list[int]:
    """The index of the highest reward of each post's candidates (the first on ties)."""
    return [int(np.argmax(r)) for r in rewards]


def _interval(values: np.ndarray, n_resamples: int, seed: int) -> dict:
    if n_resamples <= 0:  # no intervals: the mean alone
        return {"mean": float(values.mean()), "low": math.nan, "high": math.nan}
    stats = PostStats({"x": values}, {"x": np.ones_like(values)})
    iv = bootstrap_interval(stats, "x", n_resamples, seed)
    return {"mean": iv.point, "low": iv.low, "high": iv.high}


def _difference(a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int) -> dict:
    if n_resamples <= 0:
        return {"mean": float((a - b).mean()), "low": math.nan, "high": math.nan}
    ones = np.ones_like(a)
    iv = paired_difference_interval(PostStats({"x": a}, {"x": ones}), PostStats({"x": b}, {"x": ones}), "x",
                                    n_resamples, seed)  # fmt: skip
    return {"mean": iv.point, "low": iv.low, "high": iv.high}


def policy_report(
    reward_fn,
    posts: Sequence[dict],
    systems: dict[str, Sequence[str]],
    reference: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    n_examples: int = 3,
) -> dict:
    """Every system's metrics (see the module) on `posts` (dicts with `prompt` and `best`), each with its 95%
    bootstrap interval, and every system minus `reference` (default: the first) paired; a few example posts."""
    prompts = [p["prompt"] for p in posts]
    best_reward, _ = judge(reward_fn, prompts, [p["best"] for p in posts])
    values, scored = {}, {}
    for name, comments in systems.items():
        if len(comments) != len(posts):
            raise ValueError(f"{name}: {len(comments)} comments for {len(posts)} posts")
        reward, free = judge(reward_fn, prompts, list(comments))
        scored[name] = reward
        values[name] = {
            "reward": np.array(reward), "length_free_reward": np.array(free),
            "chars": np.array([len(c) for c in comments], dtype=float),
            "beats_best": np.array([float(r > b) for r, b in zip(reward, best_reward)]),
        }  # fmt: skip
    reference = reference or next(iter(systems))
    report = {
        "n_posts": len(posts),
        "length_weight": reward_fn.settings.length_weight,
        "real_best": {"reward": float(np.mean(best_reward)), "chars": float(np.mean([len(p["best"]) for p in posts]))},
        "systems": {name: {k: _interval(v, n_resamples, seed) for k, v in vals.items()}
                    for name, vals in values.items()},
        "differences": {
            f"{name} - {reference}": {k: _difference(v, values[reference][k], n_resamples, seed)
                                      for k, v in vals.items()}
            for name, vals in values.items() if name != reference
        },
        "bootstrap": {"confidence": 0.95, "n_resamples": n_resamples, "seed": seed, "unit": "post", "paired": True},
        "examples": [
            {"post": posts[i]["prompt"], "real_best": posts[i]["best"], "real_best_reward": best_reward[i],
             **{name: {"comment": systems[name][i], "reward": scored[name][i]} for name in systems}}
            for i in range(min(n_examples, len(posts)))
        ],
    }  # fmt: skip
    return report


def _fmt(entry: dict, digits: int = 3) -> str:
    mean, low, high = entry["mean"], entry["low"], entry["high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def report_markdown(report: dict, title: str = "Generated comments under the reward model") -> str:
    """The report as markdown: the systems' table, the paired differences and the examples."""
    digits = {"chars": 0}
    header = "| system | " + " | ".join(METRIC_NAMES[m] for m in METRICS) + " |"
    lines = [f"## {title}", "", f"{report['n_posts']} held-out posts; means with 95% bootstrap intervals over posts "
             f"(reward model length weight {report['length_weight']:.4g}; the posts' real best comments: reward "
             f"{report['real_best']['reward']:.3f}, {report['real_best']['chars']:.0f} characters).", "", header,
             "|---" * (len(METRICS) + 1) + "|"]  # fmt: skip
    for name, metrics in report["systems"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics[m], digits.get(m, 3)) for m in METRICS) + " |")
    for name, metrics in report["differences"].items():
        lines.append(f"| {name} (paired) | " + " | ".join(_fmt(metrics[m], digits.get(m, 3)) for m in METRICS) + " |")
    lines += ["", "### Examples", ""]
    names = list(report["systems"])
    for example in report["examples"]:
        lines += [f"**Post:** {_short(example['post'], 200)}", "",
                  f"- real best ({example['real_best_reward']:.2f}): {_short(example['real_best'])}"]  # fmt: skip
        lines += [f"- {name} ({example[name]['reward']:.2f}): {_short(example[name]['comment'])}" for name in names]
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict, folder: str | Path, name: str = "policy_report", title: str | None = None) -> Path:
    """`<name>.json` and `<name>.md` in `folder`, atomically; returns the markdown's path."""
    from commentrank.io_utils import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{name}.json", json.dumps(report, indent=2) + "\n")
    path = folder / f"{name}.md"
    atomic_write_text(path, report_markdown(report, **({"title": title} if title else {})) + "\n")
    return path


def build_policy_card(*, model_id: str, base_model: str, dataset: str | None, reward_model: str, training: dict,
                      report_md: str | None):  # fmt: skip
    """A GRPO policy's card: base model, reward model, the settings that matter, and the before/after report."""
    from huggingface_hub import ModelCardData

    from commentrank.model_card import _base_text, _card, _data_section, _training_table, display_name, hub_model_id

    dataset_name = display_name(dataset) if dataset else None
    card_data = ModelCardData(
        model_name=model_id.split("/")[-1], base_model=hub_model_id(base_model),
        datasets=[dataset_name] if dataset_name else None, library_name="transformers",
        pipeline_tag="text-generation", tags=["commentrank", "trl", "grpo", "rlhf"],
    )  # fmt: skip
    sections = [
        f"# {model_id.split('/')[-1]}",
        "",
        f"{_base_text(base_model)} trained with GRPO (TRL's `GRPOTrainer`, commentrank's `scripts/grpo.py`) to write "
        f"a comment for a post, rewarded by the commentrank reward model `{display_name(reward_model)}` "
        "(`commentrank.RewardFunction`: each post and comment encoded as that model was trained).",
        "",
        "## Training",
        "",
        _training_table(training),
        "",
    ]
    if report_md:
        sections += [report_md.replace("## ", "### ", 1) if report_md.startswith("## ") else report_md, ""]
    sections += ["The rewards above are the training reward model's own: a proxy, which a policy can learn to "
                 "exploit. Read the length-free reward and the examples, not the reward alone.", ""]  # fmt: skip
    return _card(card_data, sections + _data_section(dataset_name))
