"""PyTorch Lightning fits with FusedAdam + as_lr_scheduler(opt) returned from
configure_optimizers, against the same fit with torch.optim.Adam + the torch
scheduler: the lr of every batch and the final parameters."""
import pytest
import torch

pl = pytest.importorskip("pytorch_lightning", reason="pytorch-lightning is not installed (tests/build.sh installs it)")

from lrsched_fused import FusedAdam, as_lr_scheduler, schedules  # noqa: E402
from torch_pair import record_worst, relative_error  # noqa: E402

EPOCHS = 3
# (schedule, its kwargs, the lr_scheduler config besides "scheduler")
CONFIGS = {
    "StepLR per epoch": ("StepLR", {"step_size": 1, "gamma": 0.5}, {}),
    "CosineAnnealingLR per step": ("CosineAnnealingLR", {"T_max": 5, "eta_min": 1e-3}, {"interval": "step"}),
    "ReduceLROnPlateau with monitor": ("ReduceLROnPlateau", {"factor": 0.5, "patience": 0}, {"monitor": "watched"}),
}
WATCHED = [1.0, 1.0, 0.5]  # the monitored value per epoch: a bad epoch, then an improvement


class TinyModule(pl.LightningModule):
    def __init__(self, config: str, fused: bool):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
        self.config, self.fused = config, fused
        self.batch_lrs = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.log("watched", WATCHED[self.current_epoch], on_step=False, on_epoch=True)
        return torch.nn.functional.mse_loss(self.net(x), y)

    def on_train_batch_start(self, batch, batch_idx):
        self.batch_lrs.append(float(self.trainer.optimizers[0].param_groups[0]["lr"]))

    def configure_optimizers(self):
        name, kwargs, extra = CONFIGS[self.config]
        if self.fused:
            opt = FusedAdam(self.parameters(), lr=0.02, schedule=getattr(schedules, name)(**kwargs))
            scheduler = as_lr_scheduler(opt)
        else:
            opt = torch.optim.Adam(self.parameters(), lr=0.02, fused=True)
            scheduler = getattr(torch.optim.lr_scheduler, name)(opt, **kwargs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, **extra}}


def fit(config: str, fused: bool) -> TinyModule:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(24, 4, generator=gen)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True).sin())
    module = TinyModule(config, fused)
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    module.final_lr = float(trainer.optimizers[0].param_groups[0]["lr"])
    return module


@pytest.mark.parametrize("config", list(CONFIGS))
def test_lightning_fit_matches_the_torch_pair(config):
    ours, reference = fit(config, fused=True), fit(config, fused=False)
    assert ours.batch_lrs == reference.batch_lrs and len(ours.batch_lrs) == EPOCHS * 3
    assert ours.final_lr == reference.final_lr
    assert len(set(ours.batch_lrs + [ours.final_lr])) >= 2  # the schedule moved
    worst = max(relative_error(a, b) for a, b in zip(ours.parameters(), reference.parameters()))
    record_worst(torch.float32, param=worst)
    assert worst <= 1e-6
