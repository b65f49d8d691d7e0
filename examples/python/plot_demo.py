"""Draws the demo's metrics (examples/cpp/exploding_gradients writes them):

    python examples/python/plot_demo.py demo_out/metrics.csv demo_out/training.png

Loss, gradient norm and learning rate against step, one column per scenario: the inf records
(configurations 1-3) and, when the file has them, the finite spikes (4-7, rows whose `scenario`
is "finite"). A step whose value is not finite (nan or inf) is marked with an x at the top of its
panel; in the finite column, a skipped step is a dot on its gradient norm and the batches that
drew a corrupted record are faint vertical lines. A metrics.csv without the `scenario` column
(an older demo) is drawn as the inf scenario alone.
"""

import csv
import math
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {
    "1": "Adam, constant lr",
    "2": "Adam + WarmupCosineLR",
    "3": "steadystep FusedAdam(max_grad_norm) + WarmupCosineLR",
    "4": "FusedAdam, no clipping",
    "5": "FusedAdam(max_grad_norm)",
    "6": "FusedAdam(guard=ZScoreClip)",
    "7": "FusedAdam(max_grad_norm, guard=SpikeSkip)",
}
COLORS = {"1": "tab:red", "2": "tab:orange", "3": "tab:blue", "4": "tab:gray", "5": "tab:blue",
          "6": "tab:green", "7": "tab:purple"}
TITLES = {
    "inf": "2 of 8192 targets inf: plain Adam dies, steadystep skips and clips",
    "finite": "the same 2 targets x1000 (finite spikes), all + WarmupCosineLR",
}


def read(metrics: str) -> dict:
    """{scenario: {config: {column: [values]}}}, configurations in file order."""
    scenarios = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    with open(metrics) as f:
        for row in csv.DictReader(f):
            run = scenarios[row.get("scenario") or "inf"][row["config"]]
            run["step"].append(int(row["step"]))
            for key in ("loss", "grad_norm", "lr"):
                run[key].append(float(row[key]))
            run["skipped"].append(row["skipped"] == "1")
            run["corrupted"].append(row.get("corrupted") == "1")
    return scenarios


def draw(axes, runs: dict, scenario: str) -> None:
    panels = [("loss", "training loss (log)", True), ("grad_norm", "gradient norm (log)", True),
              ("lr", "learning rate", False)]
    for ax, (key, label, log) in zip(axes, panels):
        top = max((v for run in runs.values() for v in run[key] if math.isfinite(v)), default=1.0)
        for n, (config, run) in enumerate(runs.items(), start=1):
            color, name = COLORS.get(config, f"C{n}"), NAMES.get(config, config)
            finite = [(s, v) for s, v in zip(run["step"], run[key]) if math.isfinite(v)]
            bad = [s for s, v in zip(run["step"], run[key]) if not math.isfinite(v)]
            ax.plot([s for s, _ in finite], [v for _, v in finite], color=color, lw=1, label=name)
            if bad:
                # one row of markers per configuration, above the finite values
                row = top * (4 ** n) if log else top * (1 + 0.05 * n)
                ax.scatter(bad, [row] * len(bad), marker="x", s=12, color=color,
                           label=f"{name}: not finite")
            if scenario == "finite" and key == "grad_norm" and any(run["skipped"]):
                skipped = [(s, v) for s, v, k in zip(run["step"], run[key], run["skipped"]) if k]
                ax.scatter([s for s, _ in skipped], [v for _, v in skipped], s=18, color=color,
                           zorder=3, label=f"{name}: skipped")
        if scenario == "finite" and key != "lr":
            first = next(iter(runs.values()))
            for s, c in zip(first["step"], first["corrupted"]):
                if c:
                    ax.axvline(s, color="k", alpha=0.12, lw=0.8)
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper right")  # the lr panel has room
    axes[-1].set_xlabel("step")
    axes[0].set_title(TITLES.get(scenario, scenario), fontsize=10)


def main(metrics: str, output: str) -> None:
    scenarios = read(metrics)
    columns = [s for s in ("inf", "finite") if s in scenarios] + \
        [s for s in scenarios if s not in ("inf", "finite")]
    fig, axes = plt.subplots(3, len(columns), figsize=(8 * len(columns), 9), sharex=True,
                             squeeze=False)
    for col, scenario in enumerate(columns):
        draw(axes[:, col], scenarios[scenario], scenario)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    print(f"wrote {output}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
