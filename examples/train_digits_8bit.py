"""The digits MLP of train_digits.py trained with AdamW and a cosine schedule,
its states in float32 and in 8 bits: FusedAdamW, FusedAdamW with
state_dtype="8bit" and bitsandbytes' AdamW8bit + torch's
CosineAnnealingLR, from the same initial weights. The MLP's 64x64 weight
(4096 elements) gets 8-bit states; its other tensors are under the 4096
elements below which 8-bit optimizers keep float32 states. Prints the final
validation losses and accuracies and saves a PNG of the loss curves.

    python examples/train_digits_8bit.py --epochs 40 --out examples/train_digits_8bit.png

Needs the extension built, bitsandbytes, scikit-learn and matplotlib.
"""
from __future__ import annotations

import copy
import os
import sys
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the in-place build

from lrsched_fused import FusedAdamW, schedules  # noqa: E402

from train_digits import HIDDEN, compare_optimizers, load_digits_split, train  # noqa: E402

LR, WEIGHT_DECAY = 3e-3, 0.01
ETA_MIN_FACTOR = 0.01  # the cosine ends at 1 % of the initial lr


def run(epochs: int) -> Dict[str, Dict[str, List[float]]]:
    """{"FusedAdamW fp32 states": ..., "FusedAdamW 8-bit states": ..., "bitsandbytes AdamW8bit": ...}."""
    import bitsandbytes as bnb

    data = load_digits_split()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
    twins = [copy.deepcopy(model) for _ in range(2)]
    cosine = {"T_max": epochs, "eta_min": LR * ETA_MIN_FACTOR}
    fp32 = FusedAdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY,
                      schedule=schedules.CosineAnnealingLR(**cosine))
    eight_bit = FusedAdamW(twins[0].parameters(), lr=LR, weight_decay=WEIGHT_DECAY, state_dtype="8bit",
                           schedule=schedules.CosineAnnealingLR(**cosine))
    reference = bnb.optim.AdamW8bit(twins[1].parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(reference, **cosine)
    return {
        "FusedAdamW fp32 states": train(model, fp32, lambda _: fp32.schedule_step(), data, epochs),
        "FusedAdamW 8-bit states": train(twins[0], eight_bit, lambda _: eight_bit.schedule_step(), data, epochs),
        "bitsandbytes AdamW8bit": train(twins[1], reference, lambda _: scheduler.step(), data, epochs),
    }


STYLES = {"FusedAdamW fp32 states": dict(color="tab:blue", linewidth=4, alpha=0.4),
          "FusedAdamW 8-bit states": dict(color="black", linewidth=1, marker="."),
          "bitsandbytes AdamW8bit": dict(color="tab:orange", linewidth=1)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, List[float]]]:
    return compare_optimizers(__doc__, "train_digits_8bit.png", run, "FusedAdamW fp32 states",
                              "FusedAdamW 8-bit states", "digits MLP, AdamW (lr 3e-3, cosine): fp32 and 8-bit states",
                              STYLES, argv)


if __name__ == "__main__":
    main()
