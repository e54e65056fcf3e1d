"""examples/train_digits.py, run briefly: the FusedAdam + plateau run and the
torch pair run coincide epoch by epoch, and the PNG is written."""
import importlib.util
import os

import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (tests/build.sh installs it)")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (tests/build.sh installs it)")

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "train_digits.py")


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
