"""The evaluation classifiers: one small CNN per dataset (fashion: 10 classes; emoji: 52 attributes), trained
with ``python -m diffusion_core train-classifier``. Their penultimate features are the feature space in which
FID is measured (instead of Inception's), their heads give accuracy and per-attribute F1."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import atomic_save_tensors, read_json, write_json
from ..data import DataConfig, load_data
from .metrics import f1_per_attribute


@dataclass(frozen=True)
class ClassifierConfig:
    data: str = "fashion"
    channels: int = 1
    image_size: int = 32
    num_outputs: int = 10
    multi_label: bool = False
    width: int = 32
    feature_dim: int = 128
    label_names: tuple[str, ...] = ()


class Classifier(nn.Module):
    """A small CNN: 3 conv stages -> global pool -> feature (feature_dim) -> logits."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        w = cfg.width
        self.cfg = cfg

        def stage(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(stage(cfg.channels, w), stage(w, 2 * w), stage(2 * w, 4 * w),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, cfg.feature_dim), nn.ReLU())
        self.head = nn.Linear(cfg.feature_dim, cfg.num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) in [-1, 1] -> (B, feature_dim)."""
        if x.shape[-1] != self.cfg.image_size:
            x = F.interpolate(x, size=(self.cfg.image_size,) * 2, mode="area")
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def save_classifier(folder: Path, cfg: ClassifierConfig, net: Classifier, record: dict) -> None:
    from ..config import to_dict
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(net.state_dict(), folder / "model.safetensors")
    write_json(folder / "config.json", {"kind": "classifier", **to_dict(cfg)})
    write_json(folder / "training.json", record)


def load_classifier(folder: Path) -> Classifier:
    from safetensors.torch import load_file
    from ..config import from_dict
    data = read_json(Path(folder) / "config.json")
    data.pop("kind", None)
    cfg = from_dict(ClassifierConfig, data)
    net = Classifier(cfg)
    net.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))
    return net.eval()


def _data_for(name: str, split: str) -> DataConfig:
    if name == "fashion":
        return DataConfig(source="fashion", split=split, image_size=32, channels=1)
    if name == "emoji":
        return DataConfig(source="emoji", split=split, image_size=32, channels=3)
    raise ValueError(f"no classifier recipe for dataset {name!r}")


def train_classifier(name: str, out: Path, epochs: int = 5, seed: int = 0, batch: int = 128) -> dict:
    """Train the evaluation classifier on the training split; report test accuracy (or mean F1)."""
    with torch.random.fork_rng(devices=[]):    # seeded, and torch's global generator left as it was
        torch.manual_seed(seed)
        return _train_classifier(name, out, epochs, seed, batch)


def _train_classifier(name: str, out: Path, epochs: int, seed: int, batch: int) -> dict:
    from tqdm import tqdm
    g = torch.Generator().manual_seed(seed)
    train, test = load_data(_data_for(name, "train")), load_data(_data_for(name, "test"))
    multi = train.multi_label
    cfg = ClassifierConfig(data=name, channels=train.images.shape[-1], image_size=train.images.shape[1],
                           num_outputs=train.labels.shape[1], multi_label=multi, label_names=train.label_names)
    net = Classifier(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (len(train) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    t0 = time.time()
    net.train()
    for _ in tqdm(range(steps), unit="step", mininterval=2.0):
        idx = torch.randint(len(train), (batch,), generator=g)
        b = train.batch(idx, torch.rand(batch, generator=g) < 0.5 if name == "emoji" else None)
        x = b["image"]
        x = x + 0.05 * torch.randn(x.shape, generator=g)      # robustness to small sampling noise
        logits = net(x)
        y = b["labels"]
        loss = F.binary_cross_entropy_with_logits(logits, y) if multi else F.cross_entropy(logits, y.argmax(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.inference_mode():
        logits = torch.cat([net(test.batch(torch.arange(i, min(i + 500, len(test))))["image"])
                            for i in range(0, len(test), 500)])
    y = torch.from_numpy(test.labels)
    record = {"command": f"python -m diffusion_core classifier --data {name} --out {out} --epochs {epochs} --seed {seed}",
              "steps": steps, "wall_time_s": round(time.time() - t0, 1), "train_images": len(train),
              "test_images": len(test)}
    if multi:
        record["test_f1_per_attribute"] = dict(zip(train.label_names, f1_per_attribute(logits > 0, y > 0.5).tolist()))
    else:
        record["test_accuracy"] = float((logits.argmax(1) == y.argmax(1)).float().mean())
    save_classifier(out, cfg, net, record)
    print(json.dumps({k: v for k, v in record.items() if k != "test_f1_per_attribute"}, indent=2))
    return record


@torch.inference_mode()
def features_of(clf: Classifier, images: torch.Tensor, batch: int = 500) -> tuple[np.ndarray, torch.Tensor]:
    feats, logits = [], []
    for i in range(0, len(images), batch):
        f = clf.features(images[i:i + batch])
        feats.append(f)
        logits.append(clf.head(f))
    return torch.cat(feats).numpy().astype(np.float64), torch.cat(logits)
