"""Tables and plots of ranking results (the model against the baselines)."""

from __future__ import annotations

import os

COLUMNS = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg_votes@5", "pair_accuracy")


def markdown_table(results: dict[str, dict], columns=COLUMNS) -> str:
    """One row per ranker, one column per metric (a metric a ranker lacks is shown as -)."""
    columns = [c for c in columns if any(c in r for r in results.values())]
    lines = ["| ranker | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, metrics in results.items():
        cells = [f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_ndcg(results: dict[str, dict], path: str | os.PathLike, ks=(1, 2, 3, 4, 5)) -> None:
    """NDCG@k curves of each ranker, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, metrics in results.items():
        ax.plot(ks, [metrics.get(f"ndcg@{k}", float("nan")) for k in ks], marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("NDCG@k (relevance from rank)")
    ax.set_xticks(list(ks))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
