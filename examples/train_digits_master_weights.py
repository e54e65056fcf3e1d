"""The digits MLP of train_digits.py trained in several precision modes from
the same initial weights, with Adam + a cosine schedule to a small final lr:

  fp32 torch          torch.optim.Adam(fused=True) + CosineAnnealingLR, fp32
                      model
  bf16 torch          the same pair on a bf16 model (bf16 exp_avg /
                      exp_avg_sq, the update rounded to nearest into bf16
                      weights)
  bf16 ours (master weights)
                      FusedAdam(master_weights=True) on the bf16 model: fp32
                      master weights and fp32 state
  bf16 ours (stochastic rounding)
                      FusedAdam(stochastic_rounding=True) on the bf16 model:
                      bf16 weights and bf16 state, every write rounded
                      stochastically
  bf16 ours (master weights, bf16 state, SR)
                      FusedAdam(master_weights=True, stochastic_rounding=True,
                      state_dtype=torch.bfloat16): fp32 masters, bf16 state
                      rounded stochastically
  fp32 ours           FusedAdam, fp32 model

Ours all step with schedules.CosineAnnealingLR. The bf16 models compute in
bf16 (the logits are cast to fp32 for the loss). Each of our optimizers is
built right after torch.manual_seed(--rounding-seed, default 0), so the
stochastic rounding runs' rounding_seed does not depend on what ran before.
Prints the final losses and accuracies and saves one PNG of the loss curves
(the final validation losses in its legend).

    python examples/train_digits_master_weights.py --epochs 40 --out examples/train_digits_master_weights.png

Needs the extension built, scikit-learn and matplotlib.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the in-place build

from lrsched_fused import FusedAdam, schedules  # noqa: E402

from train_digits import BATCH_SIZE, HIDDEN, load_digits_split  # noqa: E402

LR = 1e-3
ETA_MIN = 1e-5
SR = "bf16 ours (stochastic rounding)"
SR_MASTER = "bf16 ours (master weights, bf16 state, SR)"
# name: (the model's dtype, FusedAdam's precision options; None: torch's Adam)
RUNS: Dict[str, tuple] = {
    "fp32 torch": (torch.float32, None),
    "bf16 torch": (torch.bfloat16, None),
    "bf16 ours (master weights)": (torch.bfloat16, dict(master_weights=True)),
    SR: (torch.bfloat16, dict(stochastic_rounding=True)),
    SR_MASTER: (torch.bfloat16, dict(master_weights=True, stochastic_rounding=True, state_dtype=torch.bfloat16)),
    "fp32 ours": (torch.float32, {}),
}


def train(model, optimizer, schedule_step, data, epochs: int, dtype, seed: int = 1) -> Dict[str, List[float]]:
    """Per-epoch train loss, validation loss and accuracy (the loss in fp32 on the model's logits)."""
    x_train, y_train, x_val, y_val = (t.to(dtype) if t.is_floating_point() else t for t in data)
    loss_fn = torch.nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    history = {"train_loss": [], "val_loss": [], "val_acc": []}
    for _ in range(epochs):
        model.train()
        total = torch.zeros(())
        for batch in torch.randperm(len(y_train), generator=shuffle).split(BATCH_SIZE):
            loss = loss_fn(model(x_train[batch]).float(), y_train[batch])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.detach() * len(batch)
        schedule_step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val).float()
            history["val_loss"].append(float(loss_fn(logits, y_val)))
            history["val_acc"].append(float((logits.argmax(dim=1) == y_val).float().mean()))
        history["train_loss"].append(float(total) / len(y_train))
    return history


def run(epochs: int, rounding_seed: int = 0) -> Dict[str, Dict[str, List[float]]]:
    data = load_digits_split()
    torch.manual_seed(0)
    initial = torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
    histories = {}
    for name, (dtype, options) in RUNS.items():
        model = copy.deepcopy(initial).to(dtype)
        schedule_step: Callable[[], None]
        if options is None:
            optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=ETA_MIN)
            schedule_step = scheduler.step
        else:
            torch.manual_seed(rounding_seed)  # the rounding seed, whatever ran before
            optimizer = FusedAdam(model.parameters(), lr=LR, **options,
                                  schedule=schedules.CosineAnnealingLR(T_max=epochs, eta_min=ETA_MIN))
            schedule_step = optimizer.schedule_step
        histories[name] = train(model, optimizer, schedule_step, data, epochs, dtype)
    return histories


def plot(histories, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {
        "fp32 torch": dict(color="tab:blue", linewidth=5, alpha=0.35),
        "bf16 torch": dict(color="tab:red", linewidth=1.5),
        "bf16 ours (master weights)": dict(color="black", linewidth=1, marker=".", markersize=4),
        SR: dict(color="tab:orange", linewidth=1.5, linestyle="--"),
        SR_MASTER: dict(color="tab:purple", linewidth=1, marker="x", markersize=3),
        "fp32 ours": dict(color="tab:green", linewidth=1, linestyle=":"),
    }
    for name, history in histories.items():
        epochs = range(1, len(history["val_loss"]) + 1)
        train_ax.plot(epochs, history["train_loss"], label=name, **styles[name])
        val_ax.plot(epochs, history["val_loss"], label=f"{name}: {history['val_loss'][-1]:.5f}", **styles[name])
    train_ax.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="train loss")
    val_ax.set(xlabel="epoch", ylabel="cross-entropy", yscale="log",
               title="validation loss (final value in the legend)")
    for ax in (train_ax, val_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"digits MLP, Adam lr {LR:g} cosine to {ETA_MIN:g}: precision modes "
                 "(fp32; bf16 nearest; bf16 + fp32 master weights; bf16 + stochastic rounding)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, List[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40, help="epochs per run (default 40)")
    parser.add_argument("--rounding-seed", type=int, default=0,
                        help="torch.manual_seed before each of our optimizers is built: the stochastic "
                             "rounding runs' rounding_seed is drawn from it (default 0)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "train_digits_master_weights.png"),
                        help="where to save the PNG (default examples/train_digits_master_weights.png)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    histories = run(args.epochs, args.rounding_seed)
    reference = histories["fp32 torch"]
    width = max(len(name) for name in histories)
    print(f"{'run':<{width}} {'train loss':>10} {'val loss':>9} {'val acc':>8} {'val loss vs fp32 torch':>23}")
    for name, history in histories.items():
        relative = history["val_loss"][-1] / reference["val_loss"][-1] - 1
        print(f"{name:<{width}} {history['train_loss'][-1]:>10.5f} {history['val_loss'][-1]:>9.5f} "
              f"{history['val_acc'][-1]:>8.4f} {relative:>+22.2%}")
    plot(histories, args.out)
    print(f"saved {args.out}")
    return histories


if __name__ == "__main__":
    main()
