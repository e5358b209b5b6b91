"""Training: the loop, checkpoints, EMA, logging and multi-process (DDP) support."""
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
from .trainer import BEST, LAST, Trainer, evaluate_split  # noqa: F401
