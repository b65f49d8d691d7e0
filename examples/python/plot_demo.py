"""Draws the demo's metrics (examples/cpp/exploding_gradients writes them):

    python examples/python/plot_demo.py demo_out/metrics.csv demo_out/training.png

Loss, gradient norm and learning rate against step for the three configurations; a step whose
value is not finite (nan or inf) is marked with an x at the top of its panel.
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
}
COLORS = {"1": "tab:red", "2": "tab:orange", "3": "tab:blue"}


def main(metrics: str, output: str) -> None:
    runs = defaultdict(lambda: defaultdict(list))
    with open(metrics) as f:
        for row in csv.DictReader(f):
            run = runs[row["config"]]
            run["step"].append(int(row["step"]))
            for key in ("loss", "grad_norm", "lr"):
                run[key].append(float(row[key]))
            run["skipped"].append(row["skipped"] == "1")

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    panels = [("loss", "training loss (log)", True), ("grad_norm", "gradient norm (log)", True),
              ("lr", "learning rate", False)]
    for ax, (key, label, log) in zip(axes, panels):
        top = max((v for run in runs.values() for v in run[key] if math.isfinite(v)), default=1.0)
        for config, run in sorted(runs.items()):
            finite = [(s, v) for s, v in zip(run["step"], run[key]) if math.isfinite(v)]
            bad = [s for s, v in zip(run["step"], run[key]) if not math.isfinite(v)]
            ax.plot([s for s, _ in finite], [v for _, v in finite], color=COLORS[config], lw=1,
                    label=NAMES.get(config, config))
            if bad:
                # one row of markers per configuration, above the finite values
                row = top * (4 ** int(config)) if log else top * (1 + 0.05 * int(config))
                ax.scatter(bad, [row] * len(bad), marker="x", s=12,
                           color=COLORS[config], label=f"{NAMES.get(config, config)}: not finite")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper right")  # the lr panel has room
    axes[-1].set_xlabel("step")
    fig.suptitle("Two corrupted records in 8192: plain Adam dies, steadystep skips and clips")
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    print(f"wrote {output}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
