"""A small training run that checkpoints atomically and resumes from its last
checkpoint; tests/test_crash_resume.py kills it with SIGKILL and checks the
resumed run ends bit-identically to an uninterrupted one.

    python tests/crash_resume_train.py DIR [--optimizer adamw|sgd] [--kill-at-step K] [--kill-in-save-at-step K]

Every SAVE_EVERY steps it writes DIR/checkpoint.pt (model + optimizer
state_dict, step) as a temporary file, then os.replace()s it over the old
one, so a kill at any point leaves the previous or the new checkpoint, never
a torn one. At the end it writes DIR/final.pt.
"""
import argparse
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lrsched_fused import FusedAdamW, FusedSGD, schedules  # noqa: E402

STEPS_PER_EPOCH = 4
SAVE_EVERY = 3  # not a divisor of STEPS_PER_EPOCH: checkpoints fall mid-epoch and at epoch ends
PLATEAU = {"patience": 1, "cooldown": 3, "factor": 0.5}
# The validation metric per epoch, scripted so the plateau schedule reduces
# the lr several times and spends many epochs in cooldown.
METRICS = [1.0, 0.9, 0.9, 0.95, 0.9, 0.8, 0.85, 0.85, 0.85, 0.7, 0.75, 0.8, 0.8, 0.8, 0.6, 0.6,
           0.65, 0.7, 0.7, 0.5, 0.55, 0.55, 0.55, 0.55]
EPOCHS = len(METRICS)


def build(optimizer: str):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    schedule = schedules.ReduceLROnPlateau(**PLATEAU)
    if optimizer == "adamw":
        opt = FusedAdamW(model.parameters(), lr=0.02, amsgrad=True, schedule=schedule)
    else:
        opt = FusedSGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3,
                       schedule=schedule)
    return model, opt


def batch(step: int):
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 6, generator=gen)
    return x, x.sum(1, keepdim=True).sin()


def save_atomically(obj, path: str, *, kill_before_replace: bool = False) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    if kill_before_replace:
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace(tmp, path)


def train(directory: str, optimizer: str = "adamw", kill_at_step: int = -1, kill_in_save_at_step: int = -1) -> None:
    """Trains to the end, resuming from DIR/checkpoint.pt if there is one."""
    torch.set_num_threads(1)  # the same reductions in every process
    checkpoint_path = os.path.join(directory, "checkpoint.pt")
    model, opt = build(optimizer)
    step = 0
    if os.path.exists(checkpoint_path):
        checkpoint = torch.load(checkpoint_path)
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optimizer"])
        step = checkpoint["step"]
        print(f"resumed at step {step}", flush=True)
    while step < EPOCHS * STEPS_PER_EPOCH:
        x, y = batch(step)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        step += 1
        if step % STEPS_PER_EPOCH == 0:
            opt.schedule_step(torch.tensor(METRICS[step // STEPS_PER_EPOCH - 1]))
        if step == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if step % SAVE_EVERY == 0:
            save_atomically({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                            checkpoint_path, kill_before_replace=step == kill_in_save_at_step)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "lr": opt.get_last_lr()},
               os.path.join(directory, "final.pt"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--kill-at-step", type=int, default=-1, help="SIGKILL itself right after this step")
    parser.add_argument("--kill-in-save-at-step", type=int, default=-1,
                        help="SIGKILL itself inside this step's checkpoint, between the write and the replace")
    args = parser.parse_args()
    train(args.dir, args.optimizer, args.kill_at_step, args.kill_in_save_at_step)


if __name__ == "__main__":
    main()
