"""The digits MLP of train_digits.py trained with Muon for its two weight
matrices and AdamW for its biases, with a cosine schedule: FusedMuon (one
optimizer, the schedule on the device) against torch.optim.Muon +
torch.optim.AdamW, each with torch.optim.lr_scheduler.CosineAnnealingLR,
from the same initial weights; and FusedAdamW on every parameter for scale.
Prints the final validation losses and accuracies and saves a PNG of the
loss curves.

    ATEN_CPU_CAPABILITY=default python examples/train_digits_muon.py --epochs 40 --out examples/train_digits_muon.png

Needs the extension built, scikit-learn and matplotlib.
"""
from __future__ import annotations

import copy
import os
import sys
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the in-place build

from lrsched_fused import FusedAdamW, FusedMuon, schedules  # noqa: E402

from train_digits import HIDDEN, compare_optimizers, load_digits_split, train  # noqa: E402

MUON_LR, ADAMW_LR = 0.02, 3e-3
ETA_MIN = 2e-4  # where every group's cosine ends (one schedule, one eta_min: 1 % of the Muon lr)


class TwoOptimizers:
    """torch's Muon + AdamW stepped as one, as a training loop steps them."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers
        self.param_groups = [g for opt in optimizers for g in opt.param_groups]

    def step(self):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self):
        for opt in self.optimizers:
            opt.zero_grad()


def split(model: torch.nn.Module):
    """(the weight matrices, the biases)."""
    return ([p for p in model.parameters() if p.dim() == 2], [p for p in model.parameters() if p.dim() != 2])


def run(epochs: int) -> Dict[str, Dict[str, List[float]]]:
    """{"torch Muon + AdamW": history, "FusedMuon": history, "FusedAdamW": history}, the same initial weights."""
    data = load_digits_split()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
    twins = [copy.deepcopy(model) for _ in range(2)]

    matrices, biases = split(model)
    muon, adamw = torch.optim.Muon(matrices, lr=MUON_LR), torch.optim.AdamW(biases, lr=ADAMW_LR, fused=True)
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=ETA_MIN)
                  for opt in (muon, adamw)]
    reference = TwoOptimizers(muon, adamw)
    matrices, biases = split(twins[0])
    fused = FusedMuon([{"params": matrices}, {"params": biases, "use_muon": False, "lr": ADAMW_LR}], lr=MUON_LR,
                      schedule=schedules.CosineAnnealingLR(T_max=epochs, eta_min=ETA_MIN))
    adamw_only = FusedAdamW(twins[1].parameters(), lr=ADAMW_LR,
                            schedule=schedules.CosineAnnealingLR(T_max=epochs, eta_min=ETA_MIN))
    return {
        "torch Muon + AdamW": train(model, reference, lambda _: [s.step() for s in schedulers], data, epochs),
        "FusedMuon": train(twins[0], fused, lambda _: fused.schedule_step(), data, epochs),
        "FusedAdamW": train(twins[1], adamw_only, lambda _: adamw_only.schedule_step(), data, epochs),
    }


STYLES = {"torch Muon + AdamW": dict(color="tab:blue", linewidth=4, alpha=0.4),
          "FusedMuon": dict(color="black", linewidth=1, marker="."),
          "FusedAdamW": dict(color="tab:orange", linewidth=1)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, List[float]]]:
    return compare_optimizers(__doc__, "train_digits_muon.png", run, "torch Muon + AdamW", "FusedMuon",
                              "digits MLP, cosine: Muon (lr 0.02) + AdamW biases; AdamW (lr 3e-3)",
                              STYLES, argv)


if __name__ == "__main__":
    main()
