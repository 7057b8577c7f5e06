"""Loss and validation curves of a training run, drawn from the ``history.jsonl`` that ``scripts/train.py`` writes."""

from __future__ import annotations

import json
from pathlib import Path


def plot_training_curves(history_path: str | Path, out_path: str | Path) -> Path | None:
    """Save a PNG with the training loss (left) and every scalar validation metric without a '/' (right).
    Returns the path, or None when there is no history yet."""
    history_path = Path(history_path)
    if not history_path.is_file():
        return None
    rows = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot(*zip(*train), label="train loss")
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_title("training loss")
    names = sorted({k for r in evals for k in r if k.startswith("eval/") and "/" not in k[5:]})
    for name in names:
        points = [(r["step"], r[name]) for r in evals if name in r]
        ax_eval.plot(*zip(*points), marker="o", label=name[5:])
    ax_eval.set_xlabel("optimizer step")
    ax_eval.set_title("validation")
    for ax in (ax_loss, ax_eval):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
