"""Draws a schedule's lr curve, ours against torch's, to a PNG.

    python examples/plot_schedule.py "OneCycleLR(max_lr=0.1, total_steps=100)"
    python examples/plot_schedule.py \
        "SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingWarmRestarts(T_0=10, T_mult=2)], milestones=[5])" \
        --steps 80 --out warmup_restarts.png

The expression is evaluated with the names of lrsched_fused.schedules in
scope. Schedules that need a metric (ReduceLROnPlateau, alone or composed)
are fed a noisy, slowly improving validation loss. The script prints the
largest relative difference between the two curves.
"""
import argparse
import math
import random

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lrsched_fused import schedules  # noqa: E402
from lrsched_fused.testing import torch_reference  # noqa: E402


def synthetic_metrics(steps: int, seed: int = 0):
    rng = random.Random(seed)
    return [1.0 / math.sqrt(1 + k) + 0.05 * rng.random() for k in range(steps)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("schedule", help='e.g. "CosineAnnealingLR(T_max=50)"')
    parser.add_argument("--steps", type=int, default=100, help="schedule steps to draw")
    parser.add_argument("--lr", type=float, default=0.1, help="the optimizer's lr")
    parser.add_argument("--out", default="schedule.png")
    args = parser.parse_args(argv)

    namespace = {name: getattr(schedules, name) for name in schedules.__all__}
    schedule = eval(args.schedule, {"__builtins__": {}}, namespace)  # noqa: S307 (a local plotting tool)
    metrics = synthetic_metrics(args.steps) if schedule.requires_metric else None
    ours, theirs = torch_reference.lr_curves(schedule, args.steps, lrs=(args.lr,), metrics=metrics)
    ours, theirs = [v[0] for v in ours], [v[0] for v in theirs]
    worst = max((abs(a - b) / abs(b) if b else abs(a)) for a, b in zip(ours, theirs))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(theirs, label="torch.optim.lr_scheduler", linewidth=4, alpha=0.4)
    ax.plot(ours, label="lrsched_fused (on the device)", linewidth=1.2, linestyle="--")
    ax.set_xlabel("schedule step")
    ax.set_ylabel("lr")
    ax.set_title(repr(schedule) if len(repr(schedule)) < 90 else type(schedule).__name__, fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"{args.out}: {args.steps} steps, largest relative lr difference from torch {worst:.3g}")
    return worst


if __name__ == "__main__":
    main()
