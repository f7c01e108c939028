"""Scores over feature sets and label sets: the Fréchet distance (Heusel et al. 2017) and per-attribute F1,
with the rule for which attributes can be judged at all."""
from __future__ import annotations

import numpy as np
import torch


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between Gaussian fits of two feature sets (N, D).

    A feature that is constant in both sets (a ReLU unit that never fires: 12 of the fashion classifier's
    128) adds exactly 0 to the covariance terms but makes S1 S2 singular, so those terms leave it out."""
    from scipy import linalg
    mu1, mu2 = f1.mean(0), f2.mean(0)
    varying = (f1.std(0) > 0) | (f2.std(0) > 0)
    if not varying.any():
        return float(((mu1 - mu2) ** 2).sum())
    s1, s2 = (np.atleast_2d(np.cov(f[:, varying], rowvar=False)) for f in (f1, f2))
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


VISIBLE_CLASSIFIER_F1 = 0.8    # the classifier finds the attribute on held-out real emoji at 32x32
MIN_POSITIVES = 10             # an F1 over fewer wanted positives is mostly noise (one miss of 1 = F1 0)


def visible_f1(f1: dict, classifier_f1: dict, positives: dict) -> dict:
    """Mean F1 of generated samples over the attributes that are visible at 32x32 and measurable here:
    the classifier's own F1 on held-out real images is >= VISIBLE_CLASSIFIER_F1 (what it cannot see in real
    emoji it cannot judge in generated ones) and at least MIN_POSITIVES of the n conditions ask for it."""
    names = [k for k in f1
             if classifier_f1.get(k, 0.0) >= VISIBLE_CLASSIFIER_F1 and positives.get(k, 0) >= MIN_POSITIVES]
    return {"mean": float(np.mean([f1[k] for k in names])) if names else None, "attributes": names,
            "rule": f"classifier test F1 >= {VISIBLE_CLASSIFIER_F1} and >= {MIN_POSITIVES} positives among the "
                    f"conditions"}


def f1_per_attribute(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """pred, truth: (N, L) bool -> (L,) F1 (0 where an attribute never occurs in either)."""
    tp = (pred & truth).sum(0).float()
    fp = (pred & ~truth).sum(0).float()
    fn = (~pred & truth).sum(0).float()
    return torch.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), torch.zeros_like(tp))


def attribute_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """pred, truth: (N, L) bool -> per attribute (L,) the confusion counts (long: positives, tp, fp, fn, tn)
    and the rates (float): recall = tp / (tp + fn) (true-positive rate), specificity = tn / (tn + fp),
    balanced accuracy = their mean, precision = tp / (tp + fp), F1. A rate whose denominator is 0 is 0."""
    tp = (pred & truth).sum(0)
    fp = (pred & ~truth).sum(0)
    fn = (~pred & truth).sum(0)
    tn = (~pred & ~truth).sum(0)

    def rate(a, b):
        return torch.where(b > 0, a.double() / b.clamp(min=1), torch.zeros((), dtype=torch.float64))
    recall, specificity = rate(tp, tp + fn), rate(tn, tn + fp)
    return {"positives": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn, "recall": recall,
            "specificity": specificity, "balanced_accuracy": (recall + specificity) / 2,
            "precision": rate(tp, tp + fp), "f1": rate(2 * tp, 2 * tp + fp + fn)}


# which attributes the picks evaluation can judge (issue 39): the classifier must find the attribute on real
# emoji it was not trained on (k-fold held-out), over enough of them for the rate to mean something
JUDGE_MIN_POSITIVES = 5         # real emoji with the attribute
JUDGE_MIN_RECALL = 0.9          # held-out recall (true-positive rate)
JUDGE_MIN_BALANCED = 0.9        # held-out balanced accuracy, (recall + specificity) / 2


def attribute_verdict(name: str, heldout: dict) -> str:
    """Why attribute ``name`` cannot be judged, from ``heldout`` (name -> the held-out ``attribute_scores`` of
    the classifier, as floats / ints); "" when it can."""
    s = heldout.get(name)
    if s is None:
        return f"the classifier has no held-out scores for {name}"
    if s["positives"] < JUDGE_MIN_POSITIVES:
        return f"{name} has {s['positives']} real examples (fewer than {JUDGE_MIN_POSITIVES})"
    if s["recall"] < JUDGE_MIN_RECALL:
        return f"classifier recall {s['recall']:.3f} on {name} (below {JUDGE_MIN_RECALL})"
    if s["balanced_accuracy"] < JUDGE_MIN_BALANCED:
        return f"classifier balanced accuracy {s['balanced_accuracy']:.3f} on {name} (below {JUDGE_MIN_BALANCED})"
    return ""


def pick_verdict(pick, heldout: dict) -> str:
    """"" when every attribute of ``pick`` can be judged, else every reason, joined by "; " (a pick needs no
    real emoji with all its attributes at once: "heart + red" is judged when hearts and red are each seen)."""
    return "; ".join(r for r in (attribute_verdict(a, heldout) for a in pick) if r)
