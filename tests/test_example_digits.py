"""examples/train_digits.py, run briefly: the FusedAdam + plateau run and the
torch pair run coincide epoch by epoch, and the PNG is written.
examples/train_digits_master_weights.py, run as committed (40 epochs): the
bf16 runs with master weights or stochastic rounding stay on the fp32 curve,
bf16 torch leaves it. examples/train_digits_lion.py and train_digits_muon.py:
our optimizer on its reference's curve."""
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


# The examples of one optimizer each beside its reference, 40 epochs as
# committed. Measured (CPU, ATEN_CPU_CAPABILITY=default): FusedLion and
# lion-pytorch end at validation loss 0.11066 (accuracy 0.9611), FusedMuon and
# torch's Muon + AdamW at 0.06794 (0.9833); the FusedAdamW runs beside them at
# 0.11888 and 0.11705. The bounds: the model learned (the first epoch's loss
# is ~2), and Muon beat the AdamW run.
# (example, the reference's name, ours, the bound on our final validation loss, a package it needs)
OPTIMIZER_EXAMPLES = [("train_digits_lion", "lion-pytorch", "FusedLion", 0.15, "lion_pytorch"),
                      ("train_digits_muon", "torch Muon + AdamW", "FusedMuon", 0.1, None)]


@pytest.mark.parametrize("example,reference,ours,bound,needs", OPTIMIZER_EXAMPLES,
                         ids=[e[0] for e in OPTIMIZER_EXAMPLES])
def test_optimizer_example(example, reference, ours, bound, needs, tmp_path, monkeypatch):
    """Our curve is the reference's, epoch by epoch (equal: the pinned
    instruction set rounds both alike), and the model learns."""
    if needs:
        pytest.importorskip(needs, reason=f"{needs} is not installed (tests/build.sh installs it)")
    monkeypatch.syspath_prepend(EXAMPLES)
    spec = importlib.util.spec_from_file_location(example, os.path.join(EXAMPLES, f"{example}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    png = tmp_path / "curves.png"
    histories = module.main(["--epochs", "40", "--out", str(png)])
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        assert histories[ours][key] == histories[reference][key], key
    assert histories[ours]["val_loss"][-1] < bound
    assert png.stat().st_size > 10_000


def test_8bit_example(tmp_path, monkeypatch):
    """examples/train_digits_8bit.py, 40 epochs as committed: the 8-bit run
    stays on the fp32-state run's curve. Measured (CPU,
    ATEN_CPU_CAPABILITY=default): final validation loss 0.11888 (fp32
    states), 0.11889 (8-bit), 0.11563 (bitsandbytes' AdamW8bit); the largest
    gap between the first two at any epoch 0.00422. Bounds: 1 % at the end,
    0.01 at any epoch."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (tests/build.sh installs it)")
    monkeypatch.syspath_prepend(EXAMPLES)
    spec = importlib.util.spec_from_file_location("train_digits_8bit", os.path.join(EXAMPLES, "train_digits_8bit.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    png = tmp_path / "curves.png"
    histories = module.main(["--epochs", "40", "--out", str(png)])
    fp32, coded = histories["FusedAdamW fp32 states"]["val_loss"], histories["FusedAdamW 8-bit states"]["val_loss"]
    assert abs(coded[-1] / fp32[-1] - 1) < 0.01
    assert max(abs(a - b) for a, b in zip(fp32, coded)) < 0.01
    assert fp32 != coded  # the 8-bit run is its own
    assert histories["bitsandbytes AdamW8bit"]["val_loss"][-1] < 0.15
    assert png.stat().st_size > 10_000
