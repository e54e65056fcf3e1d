"""Train a small MLP on scikit-learn's bundled digits (8x8 images, 10 classes)
twice from the same initialisation: with FusedAdam + schedules.ReduceLROnPlateau
(the metric stays a tensor) and with torch.optim.Adam + torch's
ReduceLROnPlateau. Prints both accuracy curves per epoch and saves a PNG of
loss and lr per epoch for both; the curves coincide.

    python examples/train_digits.py --epochs 60 --out examples/train_digits.png

Needs the extension built (tests/build.sh), scikit-learn and matplotlib.
torch's fused CPU Adam contracts multiply-adds into FMA on AVX2 and ours does
not, so on such a CPU the two runs differ by float32 rounding (~1e-7 per step);
ATEN_CPU_CAPABILITY=default makes them bit-identical.
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

LR = 3e-3
BATCH_SIZE = 64
HIDDEN = 64


def load_digits_split(seed: int = 0):
    """(x_train, y_train, x_val, y_val): 80 / 20 %, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = len(y) * 4 // 5
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def train(model, optimizer, schedule_step, data, epochs: int, seed: int = 1) -> Dict[str, List[float]]:
    """Per-epoch train loss, validation loss, validation accuracy and lr."""
    x_train, y_train, x_val, y_val = data
    loss_fn = torch.nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    history = {"train_loss": [], "val_loss": [], "val_acc": [], "lr": []}
    for _ in range(epochs):
        model.train()
        total = torch.zeros(())
        for batch in torch.randperm(len(y_train), generator=shuffle).split(BATCH_SIZE):
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.detach() * len(batch)
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = loss_fn(logits, y_val)
            val_acc = (logits.argmax(dim=1) == y_val).float().mean()
        schedule_step(val_loss)  # a 0-dim tensor
        # reading values for the log: the one place a loop syncs
        history["train_loss"].append(float(total) / len(y_train))
        history["val_loss"].append(float(val_loss))
        history["val_acc"].append(float(val_acc))
        history["lr"].append(float(optimizer.param_groups[0]["lr"]))
    return history


def run(epochs: int, patience: int) -> Dict[str, Dict[str, List[float]]]:
    """{"torch": history, "fused": history} from the same initial weights."""
    data = load_digits_split()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
    twin = copy.deepcopy(model)
    plateau = {"factor": 0.5, "patience": patience}

    reference = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(reference, **plateau)
    ours = FusedAdam(twin.parameters(), lr=LR, schedule=schedules.ReduceLROnPlateau(**plateau))
    return {
        "torch": train(model, reference, scheduler.step, data, epochs),
        "fused": train(twin, ours, ours.schedule_step, data, epochs),
    }


def plot(histories, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"torch": dict(color="tab:blue", linewidth=4, alpha=0.4, label="torch Adam + ReduceLROnPlateau"),
              "fused": dict(color="black", linewidth=1, marker=".", label="FusedAdam + schedules.ReduceLROnPlateau")}
    for name, history in histories.items():
        epochs = range(1, len(history["lr"]) + 1)
        loss_ax.plot(epochs, history["train_loss"], **styles[name])
        loss_ax.plot(epochs, history["val_loss"], linestyle="--", **{**styles[name], "label": None})
        lr_ax.plot(epochs, history["lr"], **styles[name])
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", yscale="log",
                title="digits MLP: train (solid) and validation (dashed) loss")
    lr_ax.set(xlabel="epoch", ylabel="lr after the epoch's plateau step", yscale="log", title="learning rate")
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare_optimizers(doc: str, default_png: str, run: Callable[[int], Dict[str, Dict[str, List[float]]]],
                       reference: str, ours: str, title: str, styles: Dict[str, dict],
                       argv: Optional[List[str]] = None) -> Dict[str, Dict[str, List[float]]]:
    """The main() of an example that trains this MLP with several optimizers
    (examples/train_digits_lion.py, train_digits_muon.py): --epochs / --out,
    ``run(epochs)`` -> {name: history}, the final validation losses, the
    largest gap between ``reference`` and ``ours``, a PNG of the validation
    loss curves (``styles``: matplotlib keywords per name)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40, help="epochs per run (default 40)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), default_png),
                        help=f"where to save the PNG (default examples/{default_png})")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    histories = run(args.epochs)
    for name, history in histories.items():
        print(f"{name:>20}: final validation loss {history['val_loss'][-1]:.5f}, accuracy {history['val_acc'][-1]:.4f}")
    worst = max(abs(a - b) for a, b in zip(histories[reference]["val_loss"], histories[ours]["val_loss"]))
    print(f"largest |{reference} - {ours}| validation loss: {worst:.3g}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, history in histories.items():
        epochs = range(1, len(history["val_loss"]) + 1)
        ax.plot(epochs, history["val_loss"], label=f"{name} (final {history['val_loss'][-1]:.4f})", **styles[name])
    ax.set(xlabel="epoch", ylabel="validation cross-entropy", yscale="log", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"saved {args.out}")
    return histories


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, List[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60, help="epochs per run (default 60)")
    parser.add_argument("--patience", type=int, default=3, help="ReduceLROnPlateau patience (default 3)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_digits.png"),
                        help="where to save the PNG (default examples/train_digits.png)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.patience < 0:
        parser.error(f"--patience must be >= 0, got {args.patience}")

    histories = run(args.epochs, args.patience)
    reference, fused = histories["torch"], histories["fused"]
    print(f"{'epoch':>5} {'torch acc':>9} {'fused acc':>9} {'torch lr':>10} {'fused lr':>10}")
    for epoch in range(args.epochs):
        print(f"{epoch + 1:>5} {reference['val_acc'][epoch]:>9.4f} {fused['val_acc'][epoch]:>9.4f} "
              f"{reference['lr'][epoch]:>10.3g} {fused['lr'][epoch]:>10.3g}")
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        worst = max(abs(a - b) for a, b in zip(reference[key], fused[key]))
        print(f"largest |torch - fused| {key}: {worst:.3g}")
    plot(histories, args.out)
    print(f"saved {args.out}")
    return histories


if __name__ == "__main__":
    main()
