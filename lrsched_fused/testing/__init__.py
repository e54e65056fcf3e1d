"""What lrsched_fused is verified against, for tests and for anyone checking a
run: ``torch_reference`` builds the stock ``torch.optim.lr_scheduler`` twin of
any of our schedules. Not needed to train; it imports transformers only for
the twin of a transformers schedule."""
from . import torch_reference

__all__ = ["torch_reference"]
