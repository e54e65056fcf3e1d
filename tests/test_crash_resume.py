"""A training run killed with SIGKILL resumes from its last atomic checkpoint
and ends bit-identically to an uninterrupted run (tests/crash_resume_train.py).

One run is killed three times and resumed after each kill: right after a
step whose last checkpoint lies inside a ReduceLROnPlateau cooldown, inside
the writing of a checkpoint (between the write and the os.replace), and at a
random step (LRSCHED_CRASH_SEED picks it; 7 by default). Each process costs
a torch import, so the kills share one run."""
import os
import random
import signal
import subprocess
import sys

import pytest
import torch

import crash_resume_train as train

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_resume_train.py")
TOTAL_STEPS = train.EPOCHS * train.STEPS_PER_EPOCH
OPTIMIZER = "adamw"


def run(directory, *extra):
    return subprocess.run([sys.executable, SCRIPT, str(directory), "--optimizer", OPTIMIZER, *extra],
                          capture_output=True, text=True, timeout=300)


def cooldown_after_each_epoch():
    """torch's ReduceLROnPlateau on the same metrics: cooldown_counter per epoch."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **train.PLATEAU)
    counters = []
    for metric in train.METRICS:
        sched.step(metric)
        counters.append(sched.cooldown_counter)
    return counters


def last_save_before(step):
    """The checkpoint a kill right after ``step`` leaves (a step's own checkpoint comes after the kill)."""
    return (step - 1) - (step - 1) % train.SAVE_EVERY


def kill_steps():
    """(mid-cooldown kill, kill inside a checkpoint, random kill), increasing."""
    counters = cooldown_after_each_epoch()
    mid_cooldown = next(save + 2 for save in range(train.SAVE_EVERY, TOTAL_STEPS, train.SAVE_EVERY)
                        if save // train.STEPS_PER_EPOCH >= 2 and counters[save // train.STEPS_PER_EPOCH - 1] > 0
                        and save % train.STEPS_PER_EPOCH != 0)
    in_save = last_save_before(mid_cooldown) + 2 * train.SAVE_EVERY
    rng = random.Random(int(os.environ.get("LRSCHED_CRASH_SEED", "7")))
    return mid_cooldown, in_save, rng.randrange(in_save + 1, TOTAL_STEPS)


def assert_bit_identical(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_bit_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_killed_three_times_the_run_ends_bit_identically(tmp_path):
    straight = tmp_path / "straight"
    straight.mkdir()
    threads = torch.get_num_threads()
    try:
        train.train(str(straight), OPTIMIZER)  # in this process: the uninterrupted reference
    finally:
        torch.set_num_threads(threads)
    expected = torch.load(straight / "final.pt")
    directory = tmp_path / "killed"
    directory.mkdir()
    mid_cooldown, in_save, at_random = kill_steps()
    resumed_from = 0
    for kill in (["--kill-at-step", str(mid_cooldown)], ["--kill-in-save-at-step", str(in_save)],
                 ["--kill-at-step", str(at_random)]):
        killed = run(directory, *kill)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        if resumed_from:
            assert f"resumed at step {resumed_from}" in killed.stdout
        assert not (directory / "final.pt").exists()
        checkpoint = torch.load(directory / "checkpoint.pt")  # loads: never torn
        step = int(kill[1])
        if kill[0] == "--kill-in-save-at-step":
            assert (directory / "checkpoint.pt.tmp").exists()
            assert checkpoint["step"] == step - train.SAVE_EVERY, "the previous checkpoint must survive"
        else:
            assert checkpoint["step"] == last_save_before(step), "the steps since it are lost"
        if step == mid_cooldown:
            assert cooldown_after_each_epoch()[checkpoint["step"] // train.STEPS_PER_EPOCH - 1] > 0
            group = checkpoint["optimizer"]["param_groups"][0]
            assert group["lr"] < group["initial_lr"], "an lr reduction must precede the cooldown"
        resumed_from = checkpoint["step"]
    finished = run(directory)
    assert finished.returncode == 0, finished.stderr
    assert f"resumed at step {resumed_from}" in finished.stdout
    final = torch.load(directory / "final.pt")
    assert_bit_identical(final, expected)
    assert final["lr"][0] < 0.02 / 4, "the schedule must have reduced the lr more than once"


def test_the_comparison_sees_one_bit():
    one_ulp_up = torch.nextafter(torch.tensor(2.0), torch.tensor(3.0))
    with pytest.raises(AssertionError):
        assert_bit_identical({"w": torch.tensor([1.0, 2.0]), "lr": [0.1]},
                             {"w": torch.stack([torch.tensor(1.0), one_ulp_up]), "lr": [0.1]})
