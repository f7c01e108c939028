"""The training loop (``Trainer.run``) and its set-up; ``train`` runs one from a ``TrainConfig``."""
from __future__ import annotations

import csv
import dataclasses
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from ..checkpoint import atomic_write_bytes, load_network, write_json
from ..config import ConfigError, to_dict
from ..data import load_data
from ..degradations import make_degradation
from ..schedules import make_schedule
from ..unet import UNet, dropout_seeded, load_parent_state
from .config import TrainConfig, model_config
from .distill import Distillation
from .objective import diffusion_loss, training_batch
from .optim import adamw, backward_in_parts, ema_with_warmup
from .outputs import PARENT_RECORD, Outputs, plot_loss
from .state import STATE, CheckpointState, clean_debris, lock_folder


class Trainer(CheckpointState, Outputs):
    """One training run: set-up (devices, torchrun's processes, the network, optionally grown from a parent,
    EMA, optimizer, schedule; resume), then ``run``: the loop of optimisation steps with logging, checkpoints
    and previews, and the export at the end. The objective is ``objective.py``, the state ``state.py``, the
    previews and export ``outputs.py``, the optimizer's parts ``optim.py``."""

    def __init__(self, cfg: TrainConfig, command: str = "", resume: bool = False, progress: bool = True,
                 reset_ema: bool = False, workers: int | None = None):
        self.cfg, self.command, self.progress = cfg, command, progress
        self.workers = workers      # row workers on a CPU (runtime.parallel; None: the machine's default, 1: none)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        dev = cfg.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but CUDA is not available")
        if self.world > 1:
            import torch.distributed as dist
            if not dist.is_initialized():
                dist.init_process_group("nccl" if dev == "cuda" else "gloo")
            if dev == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        self.device = torch.device(dev if dev == "cpu" else f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out_dir)
        self.data = load_data(cfg.data)
        self.distill = Distillation(cfg, self.device) if cfg.distill.teacher else None    # a few-step student
        self.mcfg = self.distill.student_config(self.data) if self.distill else model_config(cfg, self.data)
        with torch.random.fork_rng(devices=[]):     # torch's global generator is left as it was
            torch.manual_seed(cfg.seed)     # the network's initialisation (identical on every rank)
            self.net = UNet(self.mcfg.unet).to(self.device)
        if cfg.parent:
            pcfg, pnet = load_network(Path(cfg.parent))
            try:
                load_parent_state(self.net, pcfg.unet, pnet.state_dict())
            except ValueError as e:
                raise ConfigError(f"{cfg.parent}: {e}") from None
            if (pcfg.task, pcfg.label_names) == (self.mcfg.task, self.mcfg.label_names):
                # a fine-tune samples as its parent was measured to sample best (the app's defaults: emoji's held
                # skin tones and colours), until it is measured itself; without them its picks were judged with
                # every pick guided at full scale, darker tones than the parent's app ever draws (issue 39)
                self.mcfg = dataclasses.replace(self.mcfg, sampling=pcfg.sampling)
        if self.distill:
            self.distill.init_student(self.net)
        self.ema = AveragedModel(self.net, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
        self.opt = adamw(self.net.parameters(), cfg.lr, cfg.weight_decay)
        self.model = self.net
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.model = DistributedDataParallel(self.net, device_ids=None if dev == "cpu" else [self.device.index])
        d = self.mcfg.diffusion       # the run's diffusion section (a student's: its teacher's)
        self.schedule = make_schedule(d.schedule, d.T, d.beta_1, d.beta_T)
        self.degradation = make_degradation(d.degradation, d.T, self.schedule) if d.is_cold else None
        self.t_lo, self.t_hi = (d.t_range[0], d.t_range[1]) if d.t_range else (0, d.T)
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank + 1)   # data + noise stream
        self.dropout_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + self.rank)  # dropout masks' seeds
        self.step, self.wall = 0, 0.0
        self.saved_step: int | None = None        # the step of the last checkpoint on disk
        self.stop_requested = False
        if resume and (self.out / STATE).is_file():
            self.load_state()
            if reset_ema:   # restart the average from the current weights (warmup applies again)
                self.ema.n_averaged.zero_()
                self.ema_reset = True
        elif resume and self.rank == 0:
            print(f"no {self.out / STATE} yet; starting from scratch", file=sys.stderr)

    # ---- one optimisation step ------------------------------------------------------------------
    def make_batch(self):
        if self.distill:
            return self.distill.batch(self.data, self.gen)
        return training_batch(self.cfg, self.data, self.gen, self.t_lo, self.t_hi)

    def loss(self, x0, t, eps, cond) -> torch.Tensor:
        if self.distill:
            return self.distill.loss(self.model, self.schedule, x0, t, eps, cond)
        return diffusion_loss(self.model, x0, t, eps, cond, cfg=self.cfg, schedule=self.schedule,
                              degradation=self.degradation, device=self.device)

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train to ``cfg.steps`` (or until SIGINT / SIGTERM), logging, checkpointing and previewing on the way;
        then the final checkpoint and, unless stopped, the export to ``out / "model"``."""
        cfg = self.cfg
        lock = self._open_run_folder() if self.rank == 0 else None
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading_main() else {}
        log_path = self.out / "log.csv"
        new_log = not log_path.exists()
        bar = None
        if self.progress and self.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True, mininterval=2.0)
        self.net.train()
        t_last, n_last, loss_acc, loss_n = time.time(), 0, 0.0, 0
        try:
            logf = open(log_path, "a", newline="") if self.rank == 0 else None
            writer = csv.writer(logf) if logf else None
            if writer and new_log:
                writer.writerow(["step", "loss", "lr", "images_per_s", "wall_s"])
            while self.step < cfg.steps and not self.stop_requested:
                t0 = time.time()
                loss = self.train_step()
                self.step += 1
                self.wall += time.time() - t0
                loss_acc += loss.item()
                loss_n += 1
                n_last += cfg.batch_size * self.world
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    ips = n_last / max(time.time() - t_last, 1e-9)
                    if writer:
                        writer.writerow([self.step, f"{loss_acc / loss_n:.5f}", f"{self.lr_at(self.step):.2e}",
                                         f"{ips:.1f}", f"{self.wall:.1f}"])
                        logf.flush()
                    if bar:
                        bar.set_postfix(loss=f"{loss_acc / loss_n:.4f}", img_s=f"{ips:.0f}")
                    t_last, n_last, loss_acc, loss_n = time.time(), 0, 0.0, 0
                if bar:
                    bar.update(1)
                if self.step % cfg.checkpoint_every == 0:
                    self.save_state()
                if self.rank == 0 and cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.sample_grid(self.out / "samples" / f"step{self.step:07d}.png")
            self._finish(log_path)
        finally:
            if bar:
                bar.close()
            if self.rank == 0 and logf:
                logf.close()
            if lock is not None:
                lock.close()
            for s, h in old.items():
                signal.signal(s, h)
        return self.out / "model"

    def train_step(self) -> torch.Tensor:
        """One optimisation step: learning rate, a batch, the loss's gradient (DDP, or row pieces on the CPU's
        cores), clipping, AdamW, the EMA. Returns the loss (detached where computed in pieces)."""
        cfg = self.cfg
        if self.distill:        # a new round: the student's EMA becomes the teacher
            self.distill.at_step(self.step, self.net, self.ema.module)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)
        x0, t, eps, cond = self.make_batch()
        if self.world > 1 or self.device.type != "cpu":    # DDP reduces once per backward
            seed = int(torch.randint(2 ** 62, (1,), generator=self.dropout_gen))
            with dropout_seeded(seed, self.device):
                loss = self.loss(x0, t, eps, cond)
            loss.backward()
        else:   # one piece of the batch per CPU core (parallel.py)
            loss = backward_in_parts(lambda a, b: self.loss(x0[a:b], t[a:b], eps[a:b],
                                                            cond.index(slice(a, b)) if cond is not None else None),
                                     x0.shape[0], list(self.net.parameters()), generator=self.dropout_gen,
                                     workers=self.workers)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; stopping. The last good "
                                     f"checkpoint is kept in {self.out / STATE} (try a lower lr)")
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.opt.step()
        self.ema.update_parameters(self.net)
        return loss

    def _open_run_folder(self):
        """Rank 0 at a (re)start: the folder locked and cleaned, the config written, the parent's record kept, this
        command appended to commands.txt. Returns the lock (held until the run ends)."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        lock = lock_folder(self.out)
        clean_debris(self.out, self.step)
        if self.step >= cfg.steps:
            print(f"{self.out / STATE} is at step {self.step}, at or past steps = {cfg.steps}: nothing to train; "
                  f"exporting step {self.step}", file=sys.stderr)
        write_json(self.out / "train_config.json", to_dict(cfg))
        (self.out / "samples").mkdir(exist_ok=True)
        parent_record = Path(cfg.parent or cfg.distill.teacher) / "training.json"      # a student's: its teacher's
        if (cfg.parent or cfg.distill.teacher) and parent_record.is_file() and not (self.out / PARENT_RECORD).exists():
            # kept from the first start: the parent folder may be replaced (retrained in place) before export
            atomic_write_bytes(self.out / PARENT_RECORD, parent_record.read_bytes())
        with open(self.out / "commands.txt", "a") as f:     # every (re)start of this run, in order
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {self.step}: {self.command}\n")
        return lock

    def _finish(self, log_path: Path) -> None:
        """The final checkpoint; with several processes, check that they agree; unless stopped, export the EMA
        weights with a sample grid and the loss plot; then the processes leave together."""
        self.save_state(final=True)
        if self.world > 1:
            self.check_ranks_agree()
        if self.rank == 0 and not self.stop_requested:
            export = self.export(self.out / "model")
            self.sample_grid(export / "samples.png")
            plot_loss(log_path, export / "loss.png")
        if self.world > 1:      # leave together: no rank tears down gloo while another still uses it
            import torch.distributed as dist
            dist.barrier()
            dist.destroy_process_group()

    def check_ranks_agree(self) -> None:
        """DDP keeps replicas identical; verify it: every rank's parameter checksum is gathered on rank 0."""
        import torch.distributed as dist
        flat = torch.cat([p.detach().double().flatten().cpu() for p in self.net.parameters()])
        mine = torch.stack([flat.sum(), (flat * torch.arange(1, len(flat) + 1, dtype=torch.float64)).sum()])
        gathered = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(gathered, mine.to(self.device) if self.device.type == "cuda" else mine)
        sums = [g.cpu().tolist() for g in gathered]
        if self.rank == 0:
            write_json(self.out / "ddp_check.json", {"world_size": self.world, "param_checksums": sums,
                                                     "identical": all(s == sums[0] for s in sums)})

    def _on_signal(self, signum, frame):
        self.stop_requested = True
        print(f"\nsignal {signum}: saving a checkpoint at the end of this step, then stopping", file=sys.stderr)


def threading_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["python", "-m", "diffusion_core"] + sys.argv[1:])


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, reset_ema: bool = False) -> Path:
    return Trainer(cfg, command_line(), resume, progress, reset_ema).run()
