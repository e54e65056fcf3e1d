"""torch.compile traces step() and schedule_step() through the fake
implementations: fullgraph, and no recompile as the schedule advances
(torch recompiles with a float lr that changes)."""
import pytest
import torch
from torch._dynamo.utils import counters

from lrsched_fused import FusedAdam, FusedLion, schedules


# The optimizer and its arguments.
OPTIONS = {"plain": (FusedAdam, {}), "clipped": (FusedAdam, {"max_grad_norm": 0.05}),
           "stochastic rounding, bf16 states": (FusedAdam, {"stochastic_rounding": True,
                                                            "state_dtype": torch.bfloat16}),
           "lion": (FusedLion, {"weight_decay": 0.1}),
           "lion, stochastic rounding, bf16 states": (FusedLion, {"stochastic_rounding": True,
                                                                  "state_dtype": torch.bfloat16})}


@pytest.mark.parametrize("options", list(OPTIONS))
def test_compiled_step_and_schedule_step_fullgraph_without_recompiles(options):
    optimizer, clipping = OPTIONS[options]
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    eager_model = torch.nn.Linear(4, 2)
    eager_model.load_state_dict(model.state_dict())
    torch.manual_seed(1)  # the same rounding seed for both
    opt = optimizer(model.parameters(), lr=0.01, schedule=schedules.ReduceLROnPlateau(patience=0), **clipping)
    torch.manual_seed(1)
    eager = optimizer(eager_model.parameters(), lr=0.01, schedule=schedules.ReduceLROnPlateau(patience=0),
                      **clipping)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def compiled_step(metric):
        opt.step()
        opt.schedule_step(metric)

    x = torch.randn(8, 4)
    for epoch in range(6):
        for m in (model, eager_model):
            m.zero_grad()
            m(x).pow(2).mean().backward()
        metric = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.6, 0.7][epoch])
        compiled_step(metric)
        eager.step()
        eager.schedule_step(metric)
        if epoch == 1:
            graphs_after_warmup = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs_after_warmup  # no recompile as the lr moved
    assert opt.get_last_lr() == eager.get_last_lr() and opt.get_last_lr()[0] < 0.01
    for a, b in zip(model.parameters(), eager_model.parameters()):
        assert torch.equal(a, b)
    if "max_grad_norm" in clipping:
        assert torch.equal(opt.grad_norm, eager.grad_norm) and float(opt.grad_norm) > clipping["max_grad_norm"]
    assert not counters["graph_break"]
