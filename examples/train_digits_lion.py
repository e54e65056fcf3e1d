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

import copy
import os
import sys
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the in-place build

from lrsched_fused import FusedAdamW, FusedLion, schedules  # noqa: E402

from train_digits import HIDDEN, compare_optimizers, load_digits_split, train  # noqa: E402

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


STYLES = {"lion-pytorch": dict(color="tab:blue", linewidth=4, alpha=0.4),
          "FusedLion": dict(color="black", linewidth=1, marker="."),
          "FusedAdamW": dict(color="tab:orange", linewidth=1)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, List[float]]]:
    return compare_optimizers(__doc__, "train_digits_lion.png", run, "lion-pytorch", "FusedLion",
                              "digits MLP, cosine: Lion (lr 1e-3); AdamW (lr 3e-3)", STYLES, argv)


if __name__ == "__main__":
    main()
