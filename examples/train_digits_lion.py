"""The digits MLP of train_digits.py trained with Lion and a cosine schedule:
FusedLion + schedules.CosineAnnealingLR against lion-pytorch's Lion +
torch.optim.lr_scheduler.CosineAnnealingLR from the same initial weights
(with ATEN_CPU_CAPABILITY=default the two curves are equal), and FusedAdamW
at a 3x larger lr and a 10x smaller weight decay for scale (Lion takes a 3-10x
smaller lr than AdamW and a larger weight decay). Prints the final validation losses and accuracies and saves
a PNG of the loss curves.

    ATEN_CPU_CAPABILITY=default python examples/train_digits_lion.py --epochs 40 --out examples/train_digits_lion.png

Needs the extension built, lion-pytorch, scikit-learn and matplotlib.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the in-place build

from lrsched_fused import FusedAdamW, FusedLion, schedules  # noqa: E402

from train_digits import HIDDEN, load_digits_split, train  # noqa: E402

LION_LR, LION_WEIGHT_DECAY = 1e-3, 0.1
ADAMW_LR, ADAMW_WEIGHT_DECAY = 3e-3, 0.01
ETA_MIN_FACTOR = 0.01  # the cosine ends at 1 % of the initial lr


def run(epochs: int) -> Dict[str, Dict[str, List[float]]]:
    """{"lion-pytorch": history, "FusedLion": history, "FusedAdamW": history} from the same initial weights."""
    from lion_pytorch import Lion

    data = load_digits_split()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
    twins = [copy.deepcopy(model) for _ in range(2)]
    cosine = lambda lr: {"T_max": epochs, "eta_min": lr * ETA_MIN_FACTOR}  # noqa: E731

    reference = Lion(model.parameters(), lr=LION_LR, weight_decay=LION_WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(reference, **cosine(LION_LR))
    lion = FusedLion(twins[0].parameters(), lr=LION_LR, weight_decay=LION_WEIGHT_DECAY,
                     schedule=schedules.CosineAnnealingLR(**cosine(LION_LR)))
    adamw = FusedAdamW(twins[1].parameters(), lr=ADAMW_LR, weight_decay=ADAMW_WEIGHT_DECAY,
                       schedule=schedules.CosineAnnealingLR(**cosine(ADAMW_LR)))
    return {
        "lion-pytorch": train(model, reference, lambda _: scheduler.step(), data, epochs),
        "FusedLion": train(twins[0], lion, lambda _: lion.schedule_step(), data, epochs),
        "FusedAdamW": train(twins[1], adamw, lambda _: adamw.schedule_step(), data, epochs),
    }


def plot(histories, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    styles = {"lion-pytorch": dict(color="tab:blue", linewidth=4, alpha=0.4),
              "FusedLion": dict(color="black", linewidth=1, marker="."),
              "FusedAdamW": dict(color="tab:orange", linewidth=1)}
    for name, history in histories.items():
        epochs = range(1, len(history["val_loss"]) + 1)
        ax.plot(epochs, history["val_loss"], label=f"{name} (final {history['val_loss'][-1]:.4f})", **styles[name])
    ax.set(xlabel="epoch", ylabel="validation cross-entropy", yscale="log",
           title="digits MLP, cosine schedule: Lion (lr 1e-3) and AdamW (lr 3e-3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, List[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40, help="epochs per run (default 40)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "train_digits_lion.png"),
                        help="where to save the PNG (default examples/train_digits_lion.png)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    histories = run(args.epochs)
    for name, history in histories.items():
        print(f"{name:>13}: final validation loss {history['val_loss'][-1]:.5f}, accuracy {history['val_acc'][-1]:.4f}")
    worst = max(abs(a - b) for a, b in zip(histories["lion-pytorch"]["val_loss"], histories["FusedLion"]["val_loss"]))
    print(f"largest |lion-pytorch - FusedLion| validation loss: {worst:.3g}")
    plot(histories, args.out)
    print(f"saved {args.out}")
    return histories


if __name__ == "__main__":
    main()
