"""examples/train_digits.py, run briefly: the FusedAdam + plateau run and the
torch pair run coincide epoch by epoch, and the PNG is written.
examples/train_digits_master_weights.py, run as committed (40 epochs): the
bf16 runs with master weights or stochastic rounding stay on the fp32 curve,
bf16 torch leaves it."""
import importlib.util
import os

import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (tests/build.sh installs it)")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (tests/build.sh installs it)")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
EXAMPLE = os.path.join(EXAMPLES, "train_digits.py")


def test_the_two_runs_coincide(tmp_path):
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    png = tmp_path / "digits.png"
    # patience 0: the validation loss stalls at epoch 9, so the lr halves within the run
    histories = example.main(["--epochs", "12", "--patience", "0", "--out", str(png)])
    reference, fused = histories["torch"], histories["fused"]
    assert len(fused["lr"]) == 12 and len(set(fused["lr"])) > 1
    assert fused["lr"] == reference["lr"]
    # at the instruction set the suite pins (tests/conftest.py) both Adams round alike: the
    # curves are equal, not merely close
    for key in ("train_loss", "val_loss", "val_acc"):
        assert fused[key] == reference[key], key
    assert png.stat().st_size > 10_000

    with pytest.raises(SystemExit):
        example.main(["--epochs", "0"])


# Measured (CPU, ATEN_CPU_CAPABILITY=default as tests/conftest.py pins, 40
# epochs; --rounding-seed 0 to 4 for the stochastic rounding runs): the
# largest relative gap of any epoch's validation loss to fp32 torch's is
# 0.195 % with master weights, 0.30 % to 0.44 % with stochastic rounding,
# 0.092 % to 0.124 % with master weights + bf16 state + stochastic rounding
# (0.83 % with that bf16 state rounded to nearest instead, 85 % for bf16
# without either flag, i.e. bf16 torch); bf16 torch ends at 1.849x fp32's
# final validation loss (0.38638 / 0.20892).
ON_THE_FP32_CURVE = {"bf16 ours (master weights)": 0.005, "bf16 ours (stochastic rounding)": 0.01,
                     "bf16 ours (master weights, bf16 state, SR)": 0.005}
BF16_TORCH_STALL = 1.5


def test_precision_modes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLES)  # it imports train_digits
    spec = importlib.util.spec_from_file_location("train_digits_master_weights",
                                                  os.path.join(EXAMPLES, "train_digits_master_weights.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    png = tmp_path / "precision.png"
    histories = example.main(["--epochs", "40", "--out", str(png)])
    assert list(histories) == list(example.RUNS)
    reference = histories["fp32 torch"]["val_loss"]
    assert len(reference) == 40
    # at the pinned instruction set our fp32 Adam rounds as torch's: the same curves
    for key in ("train_loss", "val_loss", "val_acc"):
        assert histories["fp32 ours"][key] == histories["fp32 torch"][key], key
    for name, bound in ON_THE_FP32_CURVE.items():
        gap = max(abs(ours / fp32 - 1) for ours, fp32 in zip(histories[name]["val_loss"], reference))
        assert gap < bound, (name, gap)
    bf16_torch = histories["bf16 torch"]["val_loss"][-1]
    assert bf16_torch > BF16_TORCH_STALL * reference[-1]
    stochastic = histories[example.SR]["val_loss"][-1]
    assert abs(stochastic - reference[-1]) < abs(bf16_torch - reference[-1]) / 10
    # the stochastic run is its own: not the master weights run's curve
    assert histories[example.SR]["val_loss"] != histories["bf16 ours (master weights)"]["val_loss"]
    assert png.stat().st_size > 10_000


# Measured (CPU, ATEN_CPU_CAPABILITY=default, 40 epochs): FusedLion and
# lion-pytorch end at validation loss 0.11066 (accuracy 0.9611), FusedAdamW
# at 0.11888. The bound: the model learned (the first epoch's loss is ~2).
LION_FINAL_VAL_LOSS_BOUND = 0.15


def test_lion_example(tmp_path, monkeypatch):
    """examples/train_digits_lion.py as committed (40 epochs): FusedLion's
    curve is lion-pytorch's (equal: the pinned instruction set rounds both
    alike), and the model learns (a validation loss under a fixed bound)."""
    pytest.importorskip("lion_pytorch", reason="lion-pytorch is not installed (tests/build.sh installs it)")
    monkeypatch.syspath_prepend(EXAMPLES)
    spec = importlib.util.spec_from_file_location("train_digits_lion", os.path.join(EXAMPLES, "train_digits_lion.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    png = tmp_path / "lion.png"
    histories = example.main(["--epochs", "40", "--out", str(png)])
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        assert histories["FusedLion"][key] == histories["lion-pytorch"][key], key
    assert histories["FusedLion"]["val_loss"][-1] < LION_FINAL_VAL_LOSS_BOUND
    assert png.stat().st_size > 10_000
