"""torch.compile as a training lever on CPU: MiniLM forward + backward + AdamW step on batches shaped like the
quickstart recipe's (2 posts of ~4.5 comments: 9 sequences, padded widths 24-128 tokens, a new width most steps), bf16
autocast, eager against `torch.compile(dynamic=True)`, in one process, one after the other.

Usage:

    OMP_NUM_THREADS=1 python benchmarks/bench_compile.py --steps 40 --threads 1

Prints a table: the first step (the compile), the steady step time (steps 10 on) and the compiled / eager ratio.
"""

import argparse
import random
import time


def batches(n: int, seed: int = 0):
    import torch

    rng = random.Random(seed)
    return [torch.randint(1000, 20000, (9, rng.choice(range(24, 129, 8)))) for _ in range(n)]


def run(compiled: bool, steps: int) -> list[float]:
    import torch
    from transformers import AutoModel

    from commentrank.bundled_models import minilm_path

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(minilm_path())
    model.train()
    head = torch.nn.Linear(model.config.hidden_size, 1)
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=5e-5)
    forward = torch.compile(model, dynamic=True) if compiled else model
    times = []
    for ids in batches(steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = forward(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 0]
            loss = head(hidden.float()).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = {name: run(name == "torch.compile", args.steps) for name in ("eager", "torch.compile")}
    steady = {name: sum(t[10:]) / len(t[10:]) for name, t in rows.items()}
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.steps} steps\n")
    print("| mode | first step (s) | steady step (s) | vs eager | all steps (s) |\n|---|---:|---:|---:|---:|")
    for name, times in rows.items():
        ratio = steady["eager"] / steady[name]
        print(f"| {name} | {times[0]:.1f} | {steady[name]:.3f} | {ratio:.2f}x | {sum(times):.1f} |")


if __name__ == "__main__":
    main()
