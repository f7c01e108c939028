"""The picks' attribute classifier (issue 39): a classifier that can tell, on real emoji it has not seen,
whether each attribute of the picks list is there, so ``evaluate --picks`` can judge every pick it lists.

FID keeps ``checkpoints/classifier-emoji`` (its features are FID's feature space, and numbers made with
another network would not compare); the picks use ``checkpoints/classifier-emoji-attrs``, trained here:

* attribute-balanced sampling (``training.objective.sample_weights``: an image drawn in proportion to
  (N / n_a) ** balance of its rarest attribute), and a positive weight in the BCE of sqrt(negatives /
  positives) as sampled, at most ``max_pos_weight``, so a cat (12 of 3,655 emoji) is learnt at all;
* augmentation that keeps colours (colours are attributes): small shifts, zoom, horizontal flips, and the
  small Gaussian noise of the FID classifier (robustness to sampling noise);
* k-fold cross-validation: every emoji is held out once, and the per-attribute recall, specificity,
  balanced accuracy, precision and F1 come from those held-out predictions (a single 90/10 split has 0-2
  positives of the rare attributes); the shipped network is then trained the same way on every emoji.

    python -m diffusion_core classifier --data emoji-attrs --out checkpoints/classifier-emoji-attrs --folds 5
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import DataConfig, ImageData, load_data
from .classifier import Classifier, ClassifierConfig, save_classifier
from .metrics import attribute_scores

ATTRS_CLASSIFIER = Path("checkpoints/classifier-emoji-attrs")
HELDOUT_FILE = "heldout.safetensors"        # the k-fold held-out predictions (N, L) uint8, in dataset order


@dataclass(frozen=True)
class Recipe:
    epochs: int = 30
    batch: int = 128
    lr: float = 2e-3
    width: int = 32
    balance: float = 0.75           # sample_weights power (0: uniform)
    max_pos_weight: float = 4.0     # BCE positive weight sqrt(neg / pos) as sampled, clamped to [1, this]
    shift: float = 3.0              # largest shift, pixels at 32 px
    zoom: float = 0.15              # scale drawn from [1 - zoom, 1 + zoom]
    noise: float = 0.05             # Gaussian noise std, in [-1, 1] units


def kfold_indices(n: int, k: int, seed: int = 0) -> list[torch.Tensor]:
    """k disjoint folds of a random permutation of 0..n-1 (sizes differ by at most one): each index is held
    out exactly once."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [perm[i::k].sort().values for i in range(k)]


def augment(x: torch.Tensor, g: torch.Generator, shift: float, zoom: float) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] on a white background -> the same images zoomed by s ~ U[1 - zoom, 1 + zoom]
    and shifted by up to ``shift`` pixels each way (bilinear; the uncovered border is white). No colour
    changes: the colours are attributes."""
    b, _, h, _ = x.shape
    s = 1 + zoom * (2 * torch.rand(b, generator=g) - 1)
    t = (2 * torch.rand(b, 2, generator=g) - 1) * (2 * shift / h)      # normalised coordinates span 2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1


def _pos_weight(labels: torch.Tensor, weights: torch.Tensor, cap: float) -> torch.Tensor:
    """(L,) sqrt(negatives / positives) under the sampling ``weights``, clamped to [1, cap]."""
    p = (weights / weights.sum()) @ labels.double()
    return ((1 - p) / p.clamp(min=1e-6)).sqrt().clamp(1.0, cap).float()


def fit(data: ImageData, idx: torch.Tensor, cfg: ClassifierConfig, recipe: Recipe, g: torch.Generator,
        progress: bool = True) -> Classifier:
    """A classifier trained on the images ``idx`` of ``data`` with ``recipe``; returned in eval mode."""
    from tqdm import tqdm
    from ..training.objective import sample_weights
    labels = torch.from_numpy(data.labels[idx.numpy()])
    weights = sample_weights(labels, recipe.balance)
    weights = torch.ones(len(idx), dtype=torch.float64) if weights is None else weights
    pos_weight = _pos_weight(labels > 0.5, weights, recipe.max_pos_weight)
    net = Classifier(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=1e-4)
    steps = recipe.epochs * (len(idx) // recipe.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    net.train()
    for _ in tqdm(range(steps), unit="step", mininterval=5.0, disable=not progress):
        pick = torch.multinomial(weights, recipe.batch, replacement=True, generator=g)
        b = data.batch(idx[pick], torch.rand(recipe.batch, generator=g) < 0.5)
        x = augment(b["image"], g, recipe.shift, recipe.zoom)
        x = x + recipe.noise * torch.randn(x.shape, generator=g)
        loss = F.binary_cross_entropy_with_logits(net(x), b["labels"], pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.inference_mode()
def predict(net: Classifier, data: ImageData, idx: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """(len(idx), L) logits of the images ``idx`` (no augmentation)."""
    return torch.cat([net(data.batch(idx[i:i + batch])["image"]) for i in range(0, len(idx), batch)])


def train_attribute_classifier(out: Path, folds: int = 5, seed: int = 0, recipe: Recipe = Recipe(),
                               progress: bool = True) -> dict:
    """Cross-validate ``recipe`` over ``folds`` folds of every emoji, then train the shipped network on all of
    them; writes the network, training.json (command, wall times, per-attribute held-out scores) and the
    held-out predictions (``HELDOUT_FILE``) to ``out``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(Path(out), folds, seed, recipe, progress)


def _train(out: Path, folds: int, seed: int, recipe: Recipe, progress: bool) -> dict:
    from ..checkpoint import atomic_save_tensors
    data = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
    cfg = ClassifierConfig(data="emoji", channels=3, image_size=32, num_outputs=data.labels.shape[1],
                           multi_label=True, width=recipe.width, label_names=data.label_names)
    g = torch.Generator().manual_seed(seed)
    n, t0, fold_s = len(data), time.time(), []
    heldout = torch.zeros(n, cfg.num_outputs)
    for k, test in enumerate(kfold_indices(n, folds, seed)):
        tf = time.time()
        keep = torch.ones(n, dtype=torch.bool)
        keep[test] = False
        net = fit(data, keep.nonzero().flatten(), cfg, recipe, g, progress)
        heldout[test] = predict(net, data, test)
        fold_s.append(round(time.time() - tf, 1))
        print(f"fold {k + 1}/{folds}: {fold_s[-1]} s", flush=True)
    tf = time.time()
    net = fit(data, torch.arange(n), cfg, recipe, g, progress)
    final_s = round(time.time() - tf, 1)
    truth = torch.from_numpy(data.labels) > 0.5
    scores = attribute_scores(heldout > 0, truth)
    per_attr = {name: {key: (round(float(v[i]), 4) if v.is_floating_point() else int(v[i]))
                       for key, v in scores.items()} for i, name in enumerate(data.label_names)}
    record = {"command": f"python -m diffusion_core classifier --data emoji-attrs --out {out} --folds {folds} "
                         f"--epochs {recipe.epochs} --seed {seed}",
              "purpose": "judges the picks of evaluate --picks (issue 39); FID keeps checkpoints/classifier-emoji, "
                         "whose features are FID's feature space: numbers from this network's features would not "
                         "compare with earlier FIDs",
              "recipe": asdict(recipe), "folds": folds, "images": n,
              "wall_time_s": round(time.time() - t0, 1), "fold_wall_time_s": fold_s, "final_wall_time_s": final_s,
              "threads": torch.get_num_threads(),
              "heldout": f"{folds}-fold cross-validation over all {n} emoji: each image predicted (logit > 0) by "
                         f"the network trained on the other folds; the shipped network is trained on all of them",
              "heldout_per_attribute": per_attr}
    save_classifier(out, cfg, net, record)
    atomic_save_tensors({"predicted": (heldout > 0).to(torch.uint8)}, out / HELDOUT_FILE)
    print(json.dumps({k: v for k, v in record.items() if k != "heldout_per_attribute"}, indent=2))
    return record
