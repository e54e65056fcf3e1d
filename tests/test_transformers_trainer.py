"""A real transformers.Trainer run: a tiny GPT-2 built from a config (random
weights, no download), trained on the CPU with FusedAdamW and its schedule
from ``schedules.get_scheduler`` through ``optimizers=(opt, as_lr_scheduler(opt))``,
against the same Trainer building its own torch AdamW (fused) and
``transformers.get_scheduler``: the logged lrs are equal, the logged losses
within 1e-6 (measured: equal), the final weights within 1e-6."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the network

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip("transformers", reason="transformers is not installed (tests/build.sh installs it)")
pytest.importorskip("accelerate", reason="accelerate is not installed (tests/build.sh installs it)")

from lrsched_fused import FusedAdamW, as_lr_scheduler, schedules  # noqa: E402
from torch_pair import record_worst, relative_error  # noqa: E402

STEPS = 30
WARMUP = 6
LR = 3e-3
WEIGHT_DECAY = 0.01
VOCAB, LENGTH = 64, 16
# lr_scheduler_type -> lr_scheduler_kwargs; warmup ends at step 6, the decay phases cross step 30
SCHEDULES = {
    "cosine": {},
    "warmup_stable_decay": {"num_decay_steps": 12, "decay_type": "1-sqrt", "min_lr_ratio": 0.1},
}


def tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=32, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                     eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def token_batches():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (96, LENGTH), generator=gen)
    return [{"input_ids": row, "labels": row} for row in ids]


def run(tmp_path, lr_scheduler_type, ours):
    """(logged lrs, logged losses, model) of a Trainer run; `ours`: FusedAdamW
    with the Trainer's param groups and the same schedule, computed on the device."""
    model = tiny_gpt2()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / ("ours" if ours else "torch")), max_steps=STEPS, per_device_train_batch_size=8,
        learning_rate=LR, weight_decay=WEIGHT_DECAY, warmup_steps=WARMUP, lr_scheduler_type=lr_scheduler_type,
        lr_scheduler_kwargs=SCHEDULES[lr_scheduler_type], optim="adamw_torch_fused", logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    optimizers = (None, None)  # the Trainer builds torch's AdamW and transformers' scheduler
    if ours:
        trainer = transformers.Trainer(model=model, args=args)
        decay = set(trainer.get_decay_parameter_names(model))
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        opt = FusedAdamW([{"params": [p for n, p in named if n in decay], "weight_decay": WEIGHT_DECAY},
                          {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}],
                         lr=LR, schedule=schedules.get_scheduler(
                             lr_scheduler_type, num_warmup_steps=args.get_warmup_steps(STEPS),
                             num_training_steps=STEPS, scheduler_specific_kwargs=args.lr_scheduler_kwargs))
        optimizers = (opt, as_lr_scheduler(opt))
    trainer = transformers.Trainer(model=model, args=args, train_dataset=token_batches(), optimizers=optimizers)
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, FusedAdamW) == ours  # accelerate wraps the optimizer
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logged] == list(range(1, STEPS + 1))
    return [entry["learning_rate"] for entry in logged], [entry["loss"] for entry in logged], model


@pytest.mark.parametrize("lr_scheduler_type", list(SCHEDULES))
def test_trainer_with_our_optimizer_and_schedule_matches_the_trainers_own(tmp_path, lr_scheduler_type):
    torch_lrs, torch_losses, torch_model = run(tmp_path, lr_scheduler_type, ours=False)
    our_lrs, our_losses, our_model = run(tmp_path, lr_scheduler_type, ours=True)
    assert our_lrs == torch_lrs
    # the lr logged at step k is the one step k used (lr_lambda(k - 1)): warmup ends at step WARMUP + 1
    assert max(torch_lrs) == torch_lrs[WARMUP] == LR and len(set(torch_lrs)) > STEPS // 2
    for step, (a, b) in enumerate(zip(torch_losses, our_losses), start=1):
        assert abs(a - b) <= 1e-6 * abs(a), f"step {step}: loss {a!r} (torch AdamW) vs {b!r} (ours)"
    worst = max(relative_error(a, b) for a, b in zip(our_model.parameters(), torch_model.parameters()))
    record_worst(torch.float32, param=worst)
    assert worst <= 1e-6
