"""What a run leaves besides its state: preview grids of the EMA weights, the exported checkpoint folder (EMA
weights, configs, the record of how they were made), and the loss plot."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import save_model, write_json
from ..config import to_dict
from ..unet import count_parameters

PARENT_RECORD = "parent_training.json"


class Outputs:
    """The Trainer's output methods (a mixin): previews and the export."""

    def sample_grid(self, path: Path) -> None:
        """``cfg.sample_images`` samples of the EMA weights (one per class in turn, or per training condition)."""
        from ..images import grid
        from ..pipeline import Pipeline, Stage
        n = self.cfg.sample_images
        prior = {}
        if self.mcfg.diffusion.is_cold:      # start from the asked class, as exported
            prior = dict(zip(("prior", "prior_labels"), cold_prior(self.data, self.degradation, self.cfg.diffusion.T)))
        pipe = Pipeline.of(Stage.of_network(self.mcfg, self.out, self.ema.module.eval(), **prior))
        kw = {}
        cond_img = None
        if self.mcfg.unet.num_labels and not self.mcfg.multi_label:
            labels = [i % self.mcfg.unet.num_labels for i in range(n)]
        else:
            labels = None
        imgs = []
        if self.cfg.task == "super_resolution":
            idx = torch.arange(min(n, 16, len(self.data)))     # the 16 the grid shows (image i: seed i, as in
            hi = self.data.batch(idx)["image"]                  # any batch), within a request's work bound
            low = F.interpolate(hi, size=(self.cfg.low_res, self.cfg.low_res), mode="area")
            out = pipe.sample(len(idx), low_res=low, sampler="dpm++", steps=self.cfg.sample_steps, seed=0)
            up = F.interpolate(low, size=hi.shape[-2:], mode="nearest")
            grid(torch.cat([up[:16], out[:16], hi[:16]]), nrow=16).save(path)
            self.net.train()
            return
        sampler, steps = ("cold" if self.mcfg.diffusion.is_cold else "ddim"), self.cfg.sample_steps
        if self.mcfg.distilled.teacher:       # a student: its own rule and steps
            sampler, steps = self.mcfg.distilled.sampler, self.mcfg.distilled.steps
        for i in range(n):
            if self.data.cond is not None:
                cond_img = self.data.batch(torch.tensor([i % len(self.data)]))["cond"][0]
            if labels is not None:
                kw = {"labels": [labels[i]], "guidance": 2.0}
            elif self.mcfg.multi_label:
                lab = self.data.labels[i % len(self.data)]
                kw = {"labels": [int(j) for j in lab.nonzero()[0]], "guidance": 2.0}
            imgs.append(pipe.sample(1, sampler=sampler, steps=steps, seed=i, cond_image=cond_img, **kw))
        out = torch.cat(imgs)
        if self.data.cond is not None:
            conds = self.data.batch(torch.arange(n) % len(self.data))["cond"]
            conds = conds.expand(-1, out.shape[1], -1, -1)
            out = torch.cat([torch.stack([c, o]) for c, o in zip(conds[:32], out[:32])])
        grid(out, nrow=8).save(path)
        self.net.train()

    def export(self, folder: Path) -> Path:
        """EMA weights + config + the record of how they were made, into a checkpoint folder."""
        extra = None
        if self.cfg.diffusion.is_cold and not self.degradation.needs_noise:
            prior, labels = cold_prior(self.data, self.degradation, self.cfg.diffusion.T)
            extra = {"prior": prior.half(), **({"prior_labels": labels} if labels is not None else {})}
        save_model(folder, self.mcfg, self.ema.module.state_dict(), half=True, extra=extra)
        write_json(folder / "train_config.json", to_dict(self.cfg))
        runs = (self.out / "commands.txt").read_text().splitlines() if (self.out / "commands.txt").exists() else []
        record = {"command": self.command, "all_commands": runs, "steps": self.step, "wall_time_s": round(self.wall, 1),
                  "images_seen": self.step * self.cfg.batch_size * self.world, "processes": self.world,
                  "parameters": count_parameters(self.net), "data": self.data.description,
                  "device": str(self.device), "torch": torch.__version__,
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        if self.cfg.parent:     # the lineage: how the starting weights were made, as recorded at the first start
            lineage = self.out / PARENT_RECORD
            record["parent"] = {"path": self.cfg.parent,
                                "training": json.loads(lineage.read_text()) if lineage.is_file() else None}
        if self.cfg.distill.teacher:       # a student: its teacher, and how the teacher was made
            lineage = self.out / PARENT_RECORD
            record["teacher"] = {"path": self.cfg.distill.teacher, "rounds": self.cfg.distill.rounds,
                                 "training": json.loads(lineage.read_text()) if lineage.is_file() else None}
        write_json(folder / "training.json", record)
        return folder


def cold_prior(data, degradation, T: int, n: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n fully degraded training images (seeded; Bansal et al.'s generation starts from degraded data), and
    their class indices when the data has one class per image (one-hot labels), else None."""
    g = torch.Generator().manual_seed(12345)
    idx = torch.randint(len(data), (n,), generator=g)
    b = data.batch(idx)
    x0 = b["image"]
    prior = degradation(x0, torch.full((n,), T - 1, dtype=torch.long), torch.randn(x0.shape, generator=g))
    labels = b.get("labels")
    single = labels is not None and labels.dim() == 2 and bool((labels.sum(1) == 1).all())
    return prior, (labels.argmax(1).long() if single else None)


def plot_loss(csv_path: Path, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
