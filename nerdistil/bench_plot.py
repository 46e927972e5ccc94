"""``bench-latency --plot``: p50 latency against batch size, one line per model (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def plot(report: dict, path: str | Path) -> None:
    """p50 latency per batch against batch size, one line per model/backend/padding (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict]] = {}
    for r in report["results"]:
        groups.setdefault(f"{r['model']} ({r['backend']}, {r['padding']})", []).append(r)
    for label, rows in groups.items():
        rows.sort(key=lambda r: r["batch_size"])
        ax.plot([r["batch_size"] for r in rows], [r["p50_ms"] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (sentences)")
    ax.set_ylabel("p50 latency per batch (ms)")
    m = report["machine"]
    ax.set_title(f"end-to-end latency, {m['threads']} threads, {m['cpu'][:40]}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
