"""Training: one command for every model we ship (base, linear/cosine, experts, cold, SR, pose).

* objectives: eps / x0 / v prediction (Ho et al. 2020; Salimans & Ho 2022), optional min-SNR-gamma
  weighting (Hang et al. 2023), label dropout for classifier-free guidance (Ho & Salimans 2022),
  cold diffusion with any degradation and an L1 loss (Bansal et al. 2022);
* experts: timesteps drawn from [t_lo, t_hi) and initialised from a parent checkpoint (eDiff-I);
* super-resolution: the low-res condition is the downsampled target, upsampled back and noise-augmented
  (Ho et al. 2021), trained on random crops;
* AdamW + linear warmup, gradient clipping, EMA weights (torch.optim.swa_utils.AveragedModel);
* atomic checkpoints (model, EMA, optimizer, step, RNG) every N steps and on SIGINT/SIGTERM; --resume;
* DistributedDataParallel when launched by torchrun (gloo on CPU, nccl on CUDA);
* few-step students (``distill``): progressive distillation (Salimans & Ho 2022) of a shipped model, guidance an
  input of the student (Meng et al. 2023).

Modules: ``config`` (TrainConfig), ``objective`` (the batch and the loss), ``optim`` (row-piece gradients,
fused AdamW, EMA), ``state`` (checkpoints and resume), ``outputs`` (previews, export), ``loop`` (Trainer), ``distill`` (the
distillation's objective, rounds and teacher).
"""
from .config import DistillConfig, TrainConfig, apply_overrides, load_train_config, model_config
from .distill import Distillation, consistency_loss, distillation_loss, student_config
from .loop import Trainer, command_line, train
from .objective import diffusion_loss, training_batch
from .optim import adamw, backward_in_parts, ema_with_warmup
from .outputs import PARENT_RECORD, cold_prior
from .state import PREV_STATE, STATE

__all__ = ["DistillConfig", "Distillation", "consistency_loss", "distillation_loss", "student_config", "TrainConfig", "apply_overrides", "load_train_config", "model_config", "Trainer", "command_line", "train",
           "diffusion_loss", "training_batch", "adamw", "backward_in_parts", "ema_with_warmup", "PARENT_RECORD",
           "cold_prior", "PREV_STATE", "STATE"]
