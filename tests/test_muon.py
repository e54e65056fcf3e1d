"""FusedMuon against torch.optim.Muon (for the 2-D groups) + torch.optim.AdamW
(fused, for the use_muon=False groups), each driven by its own torch
scheduler built from the same spec, step by step: several shapes (square,
tall, wide, several of one shape), nesterov on and off, every adjust_lr_fn,
schedules per epoch and per step (one cycling the momentum / beta1); and
checkpoints (torch Muon's loads), resume, GradScaler, clipping, no host
sync, no allocation after the first step, torch.compile, refusals.
Distributed (DDP on gloo, FSDP2 refused): tests/test_distributed.py."""
import copy
import io

import pytest
import torch

import schedule_specs
from lrsched_fused import FusedMuon, schedules
from lrsched_fused.muon import lr_ratio
from lrsched_fused.testing import torch_reference
from schedule_specs import leaf
from test_memory import allocations
from test_no_sync import HostReadDetector
from torch_pair import assert_lr_sequences_close, plateau_metric, record_worst, relative_error

# The bounds (relative per tensor): the Muon part 1e-4, the AdamW part
# 1e-6. Measured on the CPU (the suite's baseline instruction set,
# tests/conftest.py), over the 30 runs of test_matches_torch_muon_and_adamw:
# 0 for both (every parameter bit-equal; the batched iteration rounds as
# torch's per-matrix one for these shapes); tiny matrices: test_tiny_matrices.
MUON_RTOL = 1e-4
ADAMW_RTOL = 1e-6

# (rows, cols) of the Muon group: square ones (three of one shape), tall,
# wide. Products of at least 32 x 32 x 16 multiply-adds: torch's bfloat16
# matmuls on the CPU then run the same kernel per matrix (addmm) and batched
# (baddbmm); with tiny matrices they do not (test_tiny_matrices).
MATRICES = [(64, 64), (64, 64), (64, 64), (96, 32), (32, 80), (48, 48)]
OTHERS = [(64,), (32,), (20, 3)]  # the AdamW group: biases, and a 2-D one with use_muon=False
MUON_LR, ADAMW_LR = 0.02, 3e-3

CONFIGS = {
    "default": {},
    "no nesterov": {"nesterov": False},
    "original": {"adjust_lr_fn": "original"},
    "match_rms_adamw": {"adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.01},
    "spectral_unclamped, no nesterov": {"adjust_lr_fn": "spectral_unclamped", "nesterov": False},
    "momentum 0.9, 3 steps, no decay": {"momentum": 0.9, "ns_steps": 3, "weight_decay": 0.0},
}
# (spec, epochs, steps per epoch, interval)
SCHEDULES = {
    "constant": (None, 2, 20, "epoch"),
    "StepLR": (leaf("StepLR", step_size=2, gamma=0.5), 8, 5, "epoch"),
    "CosineAnnealingLR per step": (leaf("CosineAnnealingLR", T_max=25, eta_min=1e-4), 8, 5, "step"),
    "OneCycleLR per step (cycles momentum and beta1)": (leaf("OneCycleLR", max_lr=0.03, total_steps=40), 8, 5,
                                                        "step"),
    "ReduceLROnPlateau": (leaf("ReduceLROnPlateau", factor=0.5, patience=1), 8, 5, "epoch"),
}


def values(seed=0, dtype=torch.float32, matrices=MATRICES):
    g = torch.Generator().manual_seed(seed)
    draw = lambda shape: (torch.randn(shape, generator=g, dtype=torch.float64) * 0.3).to(dtype)  # noqa: E731
    return [draw(s) for s in matrices], [draw(s) for s in OTHERS]


class MuonPair:
    """torch's Muon + AdamW (+ a scheduler each) and FusedMuon over twin parameters."""

    def __init__(self, config, spec=None, interval="epoch", dtype=torch.float32, seed=0, matrices=MATRICES,
                 device="cpu"):
        matrices, others = values(seed, dtype, matrices)
        twin = lambda ts: [t.clone().to(device).requires_grad_() for t in ts]  # noqa: E731
        self.torch_matrices, self.torch_others = twin(matrices), twin(others)
        self.our_matrices, self.our_others = twin(matrices), twin(others)
        self.muon = torch.optim.Muon(self.torch_matrices, lr=MUON_LR, **config)
        self.adamw = torch.optim.AdamW(self.torch_others, lr=ADAMW_LR, fused=True)
        self.torch_schedulers = [schedule_specs.torchs(spec, opt) for opt in (self.muon, self.adamw)] if spec else []
        self.ours = FusedMuon([{"params": self.our_matrices}, {"params": self.our_others, "use_muon": False,
                                                               "lr": ADAMW_LR}],
                              lr=MUON_LR, **config, schedule=schedule_specs.ours(spec), schedule_interval=interval)
        self.spec, self.interval = spec, interval
        self.torch_lrs, self.our_lrs = [self.torch_lr()], [self.ours.get_last_lr()]

    def torch_lr(self):
        return [float(self.muon.param_groups[0]["lr"]), float(self.adamw.param_groups[0]["lr"])]

    def set_grads(self, gen, scale=1.0):
        for ours, theirs in ((self.our_matrices, self.torch_matrices), (self.our_others, self.torch_others)):
            for a, b in zip(ours, theirs):
                g = torch.randn(a.shape, generator=gen, dtype=torch.float64).to(a.dtype).to(a.device)
                a.grad, b.grad = (g * scale).to(a.dtype), g.clone()

    def step(self, gen):
        self.set_grads(gen)
        self.muon.step()
        self.adamw.step()
        self.ours.step()
        if self.interval == "step" and self.spec is not None:
            for s in self.torch_schedulers:
                torch_reference.step(s, None)
            self.note_lrs()

    def end_epoch(self, epoch):
        if self.interval != "epoch" or self.spec is None:
            return
        metric = plateau_metric(epoch) if schedule_specs.needs_metric(self.spec) else None
        for s in self.torch_schedulers:
            torch_reference.step(s, metric)
        self.ours.schedule_step(*(() if metric is None else (torch.tensor(metric, dtype=torch.float64,
                                                                          device=self.our_matrices[0].device),)))
        self.note_lrs()

    def note_lrs(self):
        self.torch_lrs.append(self.torch_lr())
        self.our_lrs.append(self.ours.get_last_lr())

    def errors(self):
        muon = max(relative_error(o, t) for o, t in zip(self.our_matrices, self.torch_matrices))
        adamw = max(relative_error(o, t) for o, t in zip(self.our_others, self.torch_others))
        return muon, adamw


def run(config, schedule="constant", dtype=torch.float32, matrices=MATRICES, device="cpu"):
    spec, epochs, steps, interval = SCHEDULES[schedule]
    pair = MuonPair(config, spec and schedule_specs.run_for(spec, epochs, steps), interval, dtype, matrices=matrices,
                    device=device)
    gen = torch.Generator().manual_seed(1)
    for epoch in range(epochs):
        for _ in range(steps):
            pair.step(gen)
        pair.end_epoch(epoch)
    return pair


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_matches_torch_muon_and_adamw(config, schedule):
    pair = run(CONFIGS[config], schedule)
    assert_lr_sequences_close(pair.torch_lrs, pair.our_lrs, "lr", "muon", rtol=0.0)
    muon, adamw = pair.errors()
    record_worst("muon (Muon part)", param=muon)
    record_worst("muon (AdamW part)", param=adamw)
    assert muon <= MUON_RTOL and adamw <= ADAMW_RTOL, (muon, adamw)
    buffers = max(relative_error(pair.ours.state[o]["momentum_buffer"], pair.muon.state[t]["momentum_buffer"])
                  for o, t in zip(pair.our_matrices, pair.torch_matrices))
    assert buffers <= MUON_RTOL, buffers


# bf16 parameters: torch's bf16 `param.add_(update, alpha=-adjusted_lr)` on
# the CPU at the baseline instruction set rounds alpha and alpha * update to
# bf16 before the sum (its scalar path: bf16(p + bf16(u * bf16(alpha))),
# checked element by element); ours rounds the sum once, from float32, as
# torch's vectorized (AVX2/AVX512) path does. About 8 % of the elements then
# differ by one bf16 ulp after a step. The bound: 2 bf16 ulps (2 * 2**-8)
# norm-relative, as for bf16 in tests/test_cuda.py. Measured after these 40
# steps: 1.4e-3 (fp64: 0, the iteration is bf16 for every dtype).
OTHER_DTYPE_RTOL = {torch.bfloat16: 2 * 2.0 ** -8, torch.float64: MUON_RTOL}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_other_parameter_dtypes(dtype):
    """bf16 parameters (buffers and AdamW states in bf16) and fp64 ones."""
    muon, adamw = run({}, "CosineAnnealingLR per step", dtype=dtype).errors()
    record_worst(f"muon {str(dtype)[6:]} (Muon part)", param=muon)
    assert muon <= OTHER_DTYPE_RTOL[dtype] and adamw <= ADAMW_RTOL, (muon, adamw)


# Matrices under 32 x 32 x 16 multiply-adds per product: torch's batched
# bfloat16 matmul (baddbmm) then runs another CPU kernel than its per-matrix
# addmm, and an output element may round the other way; the iteration spreads
# such a flip over the matrix. Measured over these 40 steps: 8.0e-5.
TINY_MATRICES = [(16, 16), (16, 16), (16, 16), (24, 8), (8, 20), (12, 12)]


def test_tiny_matrices():
    muon, adamw = run({}, "constant", matrices=TINY_MATRICES).errors()
    record_worst("muon (Muon part, tiny matrices)", param=muon)
    assert muon <= MUON_RTOL and adamw <= ADAMW_RTOL, (muon, adamw)


def test_lr_ratios_are_torchs():
    from torch.optim._muon import _adjust_lr
    for fn in (None, "original", "match_rms_adamw", "spectral_unclamped"):
        for shape in MATRICES:
            assert lr_ratio(fn, shape) * 0.37 == _adjust_lr(0.37, fn, torch.Size(shape))


def test_loads_a_torch_muon_checkpoint():
    """torch.optim.Muon's state_dict (momentum_buffer; groups without use_muon)
    loads into a FusedMuon of Muon groups, which then steps as torch's goes on."""
    matrices, _ = values(3)
    theirs = [t.clone().requires_grad_() for t in matrices]
    muon = torch.optim.Muon(theirs, lr=MUON_LR)
    gen = torch.Generator().manual_seed(4)
    grads = [[torch.randn(t.shape, generator=gen) for t in matrices] for _ in range(8)]
    for step in range(4):
        for p, g in zip(theirs, grads[step]):
            p.grad = g.clone()
        muon.step()
    ours_params = [p.detach().clone().requires_grad_() for p in theirs]
    ours = FusedMuon(ours_params, lr=MUON_LR)
    ours.load_state_dict(copy.deepcopy(muon.state_dict()))
    assert ours.param_groups[0]["use_muon"] is True
    for step in range(4, 8):
        for params in (theirs, ours_params):
            for p, g in zip(params, grads[step]):
                p.grad = g.clone()
        muon.step()
        ours.step()
    assert max(relative_error(o, t) for o, t in zip(ours_params, theirs)) <= MUON_RTOL


def test_resume_is_bit_identical():
    spec = schedule_specs.run_for(leaf("CosineAnnealingLR", T_max=6, eta_min=1e-4), 6, 3)

    def make(matrices, others):
        return FusedMuon([{"params": matrices}, {"params": others, "use_muon": False}], lr=MUON_LR,
                         schedule=schedule_specs.ours(spec))

    def train(opt, params, epochs, gen):
        for _ in epochs:
            for _ in range(3):
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen)
                opt.step()
            opt.schedule_step()

    matrices, others = values(5)
    straight = [t.clone().requires_grad_() for t in matrices + others]
    opt = make(straight[:len(matrices)], straight[len(matrices):])
    train(opt, straight, range(6), torch.Generator().manual_seed(6))
    halves = [t.clone().requires_grad_() for t in matrices + others]
    gen = torch.Generator().manual_seed(6)
    first = make(halves[:len(matrices)], halves[len(matrices):])
    train(first, halves, range(3), gen)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = make(halves[:len(matrices)], halves[len(matrices):])
    second.load_state_dict(torch.load(buffer))
    train(second, halves, range(3), gen)
    for a, b in zip(straight, halves):
        assert torch.equal(a, b)
    assert opt.get_last_lr() == second.get_last_lr()


def test_grad_scaler_unscales_and_a_skipped_step_changes_nothing():
    """GradScaler's protocol (grad_scale / found_inf on the optimizer): grads
    scaled by 1024 give the unscaled run's parameters; found_inf set, nothing moves."""
    plain, scaled = run({}, "constant"), MuonPair({})
    gen = torch.Generator().manual_seed(1)
    scaled.ours.grad_scale = torch.tensor(1024.0)
    scaled.ours.found_inf = torch.tensor(0.0)
    for _ in range(40):
        scaled.set_grads(gen, scale=1024.0)
        scaled.ours.step()
    for a, b in zip(scaled.our_matrices + scaled.our_others, plain.our_matrices + plain.our_others):
        assert torch.equal(a, b)
    kept = [p.detach().clone() for p in scaled.our_matrices + scaled.our_others]
    buffers = [scaled.ours.state[p]["momentum_buffer"].clone() for p in scaled.our_matrices]
    scaled.ours.found_inf = torch.tensor(1.0)
    scaled.set_grads(gen, scale=1024.0)
    scaled.ours.step()
    assert all(torch.equal(p, k) for p, k in zip(scaled.our_matrices + scaled.our_others, kept))
    assert all(torch.equal(scaled.ours.state[p]["momentum_buffer"], b) for p, b in zip(scaled.our_matrices, buffers))


def test_clipping_matches_clip_grad_norm():
    """max_grad_norm over both kinds of group: our total norm is the exact
    one to 1e-6 (tests/torch_pair.py's clip_reference_grads computes it in
    float64), and the step is torch's Muon and AdamW after the grads are
    multiplied by our clip coefficient, as clip_grads_with_norm_ multiplies
    them. (The Newton-Schulz input is rounded to bfloat16: a coefficient one
    float32 ulp off flips roundings there, and the iteration spreads a flip
    over the whole matrix, ~1e-4 relative in 20 steps; so the reference takes
    our coefficient rather than its own.)"""
    pair = MuonPair({})
    pair.ours = FusedMuon([{"params": pair.our_matrices}, {"params": pair.our_others, "use_muon": False,
                                                           "lr": ADAMW_LR}], lr=MUON_LR, max_grad_norm=1.0)
    reference = pair.torch_matrices + pair.torch_others
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        pair.set_grads(gen)
        exact = float(torch.linalg.vector_norm(torch.stack([p.grad.double().norm() for p in reference])))
        pair.ours.step()
        assert abs(float(pair.ours.grad_norm) - exact) <= 1e-6 * exact and exact > 1.0  # clipped
        torch._foreach_mul_([p.grad for p in reference], pair.ours._clipping.clip_coef)
        pair.muon.step()
        pair.adamw.step()
    muon, adamw = pair.errors()
    assert muon <= MUON_RTOL and adamw <= ADAMW_RTOL, (muon, adamw)


def test_step_reads_nothing_back_and_its_passes_allocate_nothing():
    """No host read in step() or schedule_step(). After the first step only
    torch's bfloat16 matmuls allocate: on the CPU oneDNN takes scratch memory
    per call (~26 KB for a 64 x 64 product; torch.optim.Muon's addmm does
    too), so the iteration's matmuls are measured apart: with them replaced by
    the results they gave, the step allocates nothing (on CUDA the whole step
    allocates nothing: tests/test_cuda.py)."""
    pair = MuonPair({}, schedule_specs.run_for(leaf("ReduceLROnPlateau", patience=0), 3, 2), "epoch")
    gen = torch.Generator().manual_seed(1)
    metric = torch.tensor(1.0)
    pair.set_grads(gen)
    pair.ours.step()
    detector = HostReadDetector()
    for _ in range(3):
        pair.set_grads(gen)
        with detector:
            pair.ours.step()
            pair.ours.schedule_step(metric)
    plan = next(b for b in pair.ours._plan._groups[0].buckets).extra
    results = plan.orthogonalize(pair.ours.param_groups[0]["ns_coefficients"], 5, 1e-7)
    plan.orthogonalize = lambda *args: results
    assert allocations(pair.ours.step) == []


def test_compiled_step_fullgraph_matches_eager():
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    eager, compiled = MuonPair({}), MuonPair({})

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step():
        compiled.ours.step()

    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(4):
        eager.set_grads(gen_a)
        eager.ours.step()
        compiled.set_grads(gen_b)
        step()
    for a, b in zip(eager.our_matrices + eager.our_others, compiled.our_matrices + compiled.our_others):
        assert torch.equal(a, b)
    assert not counters["graph_break"]


@pytest.mark.parametrize("group,error,match", [
    ({"params": [torch.zeros(3, requires_grad=True)]}, ValueError,
     r"parameter 0 of param group 1 has shape \(3,\); Muon steps 2-D matrices only: put it in a param group "
     r"with use_muon=False"),
    ({"params": [torch.zeros(2, 3, 4, requires_grad=True)]}, ValueError, r"has shape \(2, 3, 4\)"),
    ({"params": [torch.zeros(4, 3).t().requires_grad_()]}, ValueError, "not contiguous"),
    ({"params": [torch.zeros(3, 3, requires_grad=True)], "ns_steps": 100}, ValueError, r"ns_steps must be in \[0, 100\)"),
    ({"params": [torch.zeros(3, 3, requires_grad=True)], "ns_steps": 2.0}, TypeError, "ns_steps must be an int"),
    ({"params": [torch.zeros(3, 3, requires_grad=True)], "adjust_lr_fn": "rms"}, ValueError, "adjust_lr_fn must be one of"),
    ({"params": [torch.zeros(3, 3, requires_grad=True)], "ns_coefficients": (1.0, 2.0)}, ValueError,
     "ns_coefficients must be three finite numbers"),
    ({"params": [torch.zeros(3, 3, requires_grad=True)], "momentum": -0.1}, ValueError, "momentum"),
    ({"params": [torch.zeros(3, 3, requires_grad=True)], "use_muon": "no"}, TypeError, "use_muon must be a bool"),
    ({"params": [torch.zeros(3, requires_grad=True)], "use_muon": False, "betas": (0.9, 1.0)}, ValueError,
     r"betas\[1\] must be in \[0, 1\)"),
])
def test_refuses_a_bad_group_before_anything_changes(group, error, match):
    p = torch.zeros(4, 4, requires_grad=True)
    opt = FusedMuon([p], lr=MUON_LR)
    with pytest.raises(error, match=match):
        opt.add_param_group(group)
    assert len(opt.param_groups) == 1 and len(opt.get_last_lr()) == 1


def test_adamw_groups_take_torch_adamw_defaults():
    p, b = torch.zeros(4, 4, requires_grad=True), torch.zeros(4, requires_grad=True)
    opt = FusedMuon([{"params": [p]}, {"params": [b], "use_muon": False}], lr=0.02)
    muon, adamw = opt.param_groups
    assert (float(muon["lr"]), muon["weight_decay"], muon["eps"]) == (0.02, 0.1, 1e-7)
    assert (float(adamw["lr"]), adamw["betas"], adamw["eps"], adamw["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8,
                                                                                        1e-2)
    assert "betas" not in muon


def test_a_deepcopy_steps_on_as_the_original():
    pair = MuonPair({}, schedule_specs.run_for(leaf("StepLR", step_size=1, gamma=0.5), 3, 2), "step")
    gen = torch.Generator().manual_seed(2)
    pair.step(gen)
    twin = copy.deepcopy(pair.ours)
    params = [p for g in twin.param_groups for p in g["params"]]
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    for p, q, g in zip(pair.our_matrices + pair.our_others, params, grads):
        p.grad, q.grad = g.clone(), g.clone()
    pair.ours.step()
    twin.step()
    assert all(torch.equal(p, q) for p, q in zip(pair.our_matrices + pair.our_others, params))
    assert twin.get_last_lr() == pair.ours.get_last_lr()


def test_the_ops_check_their_arguments():
    """muon_momentum_ / muon_apply_ called directly (NOTE: [Muon's passes]): a
    wrong dtype, shape or count is refused before anything is written."""
    from lrsched_fused import _ops
    opt = FusedMuon([torch.zeros(4, 4, requires_grad=True)])
    state = opt.schedule_state
    grads, buffers = [torch.ones(4, 4)], [torch.zeros(4, 4)]
    with pytest.raises(RuntimeError, match="updates\\[0\\] must match its parameter .* dtype BFloat16"):
        _ops.muon_momentum_(grads, buffers, [torch.zeros(4, 4)], state, 0, True)
    with pytest.raises(RuntimeError, match="momentum_buffers\\[0\\] must match"):
        _ops.muon_momentum_(grads, [torch.zeros(4, 5)], [torch.zeros(4, 4, dtype=torch.bfloat16)], state, 0, True)
    with pytest.raises(RuntimeError, match="group_index 3 is out of range"):
        _ops.muon_momentum_(grads, buffers, [torch.zeros(4, 4, dtype=torch.bfloat16)], state, 3, True)
    assert torch.equal(buffers[0], torch.zeros(4, 4))
    params = [torch.ones(4, 4)]
    with pytest.raises(RuntimeError, match="lr_ratios has 2 values, expected 1"):
        _ops.muon_apply_(params, [torch.zeros(4, 4, dtype=torch.bfloat16)], state, 0, [1.0, 1.0])
    with pytest.raises(RuntimeError, match="orthogonalized\\[0\\] must match"):
        _ops.muon_apply_(params, [torch.zeros(4, 4)], state, 0, [1.0])
    assert torch.equal(params[0], torch.ones(4, 4))


def test_an_edited_adjust_lr_fn_is_taken():
    """The lr ratios are kept per bucket and computed again when the group's adjust_lr_fn is edited."""
    pair = MuonPair({})
    gen = torch.Generator().manual_seed(1)
    for step in range(10):
        if step == 5:
            for group in (pair.muon.param_groups[0], pair.ours.param_groups[0]):
                group["adjust_lr_fn"] = "match_rms_adamw"
        pair.step(gen)
    muon, adamw = pair.errors()
    assert muon <= MUON_RTOL and adamw <= ADAMW_RTOL, (muon, adamw)
    unedited = MuonPair({})
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        unedited.step(gen)
    assert not torch.equal(unedited.our_matrices[0], pair.our_matrices[0])  # the edit changed the trajectory
