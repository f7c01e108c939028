"""The condition object: labels (one-/multi-hot), a conditioning image, and the null condition.

Classifier-free guidance (Ho & Salimans 2022) trains one network on both conditional and
unconditional inputs by replacing the condition with a *null* condition with probability p. The null
condition is marked explicitly by ``uncond`` (so an all-zero multi-hot vector, "no attributes", stays
a valid condition distinct from "unconditional").

Partial labels: beside the multi-hot ``labels`` a ``known`` mask says which attributes are specified. An
unknown attribute may be present or absent ("woman + dark skin tone" = any emoji that has both), where a
plain multi-hot vector means "exactly these and nothing else". Networks built with ``label_mask`` read the
mask (``unet.UNet.embed``); training hides attributes at random (``hide_labels``) so they learn it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .config import ConfigError


@dataclass(frozen=True)
class Condition:
    """A batch of conditions.

    labels:   (B, L) float in {0, 1}: one-hot class or multi-hot attributes; None if the model has no labels.
    image:    (B, C, H, W) float in [-1, 1]: conditioning image (stickman, or upsampled low-res for SR).
    uncond:   (B,) bool: True where the condition is dropped (the null condition).
    aug_level:(B,) float in [0, 1]: noise-augmentation level of ``image`` (cascaded diffusion, Ho et al. 2021).
    known:    (B, L) float in {0, 1}: 1 where the attribute in ``labels`` is specified, 0 where it is unknown;
              None: every attribute is known (a full label set).
    guidance: (B,) float >= 0: the guidance scale w, an input of a network with ``unet.guidance_embedding`` (guided
              distillation, Meng et al. 2023); None: w = 1.
    """

    labels: torch.Tensor | None = None
    image: torch.Tensor | None = None
    uncond: torch.Tensor | None = None
    aug_level: torch.Tensor | None = None
    known: torch.Tensor | None = None
    guidance: torch.Tensor | None = None

    def _fields(self) -> tuple:
        return self.labels, self.image, self.uncond, self.aug_level, self.known, self.guidance

    @property
    def batch_size(self) -> int | None:
        for v in self._fields():
            if v is not None:
                return int(v.shape[0])
        return None

    def null(self) -> "Condition":
        """The same batch with every condition dropped (for the unconditional pass of CFG)."""
        b = self.batch_size
        if b is None:
            return self
        dev = next(v.device for v in self._fields() if v is not None)
        return replace(self, uncond=torch.ones(b, dtype=torch.bool, device=dev))

    def has_guidable(self) -> bool:
        return self.labels is not None or (self.image is not None and self.aug_level is None)

    def index(self, idx) -> "Condition":
        return Condition(*(None if v is None else v[idx] for v in self._fields()))

    def repeat(self, n: int) -> "Condition":
        return Condition(*(None if v is None else v.repeat_interleave(n, dim=0) for v in self._fields()))

    def to(self, device) -> "Condition":
        return Condition(*(None if v is None else v.to(device) for v in self._fields()))


def cat_conditions(a: Condition, b: Condition) -> Condition:
    """Concatenate two condition batches along the batch axis (used to batch CFG's two passes)."""
    def c(x, y, fill):
        if x is None and y is None:
            return None
        return torch.cat([x if x is not None else fill(y), y if y is not None else fill(x)])
    ba, bb = a.batch_size, b.batch_size
    ua = a.uncond if a.uncond is not None else torch.zeros(ba or 0, dtype=torch.bool)
    ub = b.uncond if b.uncond is not None else torch.zeros(bb or 0, dtype=torch.bool)
    return Condition(c(a.labels, b.labels, torch.zeros_like), c(a.image, b.image, torch.zeros_like),
                     torch.cat([ua.to(ub.device), ub]) if (ba or bb) else None,
                     c(a.aug_level, b.aug_level, torch.zeros_like),
                     c(a.known, b.known, torch.ones_like),       # no mask = every attribute known
                     c(a.guidance, b.guidance, torch.ones_like))     # no scale = w 1


def labels_to_vector(indices: list[int], num_labels: int, batch: int, multi: bool) -> torch.Tensor:
    """One- or multi-hot vector (batch, num_labels) for the given label indices."""
    if not multi and len(indices) > 1:
        raise ValueError("this model takes one class label; got several")
    v = torch.zeros(batch, num_labels)
    for i in indices:
        if not 0 <= i < num_labels:
            raise ValueError(f"label index {i} out of range [0, {num_labels})")
        v[:, i] = 1.0
    return v


def picks_meaning(multi: bool, partial: bool) -> str:
    """What a user's picked labels ask of a model, in one sentence (the app's model card and attribute box)."""
    if not multi:
        return "one class: every image is of that class"
    if partial:
        return ("the images have every picked attribute; the attributes not picked are unspecified "
                "(\"woman + dark skin tone\" is any emoji with both)")
    return ("the picked attributes are the image's whole attribute set, every other one absent "
            "(trained on full label sets; a few picks alone are rarely a real combination)")


def picks_condition(indices: list[int], num_labels: int, batch: int, multi: bool, partial: bool) -> Condition:
    """The condition for a user's picked labels. ``partial`` (a network with ``label_mask``): the picks are
    present and known, every other attribute unknown ("has at least these"). Otherwise the full vector:
    the picks present, everything else absent ("exactly these"), as the older models were trained."""
    labels = labels_to_vector(indices, num_labels, batch, multi)
    return Condition(labels=labels, uncond=torch.zeros(batch, dtype=torch.bool),
                     known=labels.clone() if partial else None)


def resolve_labels(names_or_indices, label_names: tuple[str, ...]) -> list[int]:
    """Turn user labels (names, case-insensitive, or integer strings) into indices, with a clear error."""
    out = []
    lower = [n.lower() for n in label_names]
    for item in names_or_indices:
        s = str(item).strip()
        if s.lower() in lower:
            out.append(lower.index(s.lower()))
        elif s.lstrip("-").isdigit() and 0 <= int(s) < len(label_names):
            out.append(int(s))
        else:
            shown = ", ".join(label_names[:12]) + (" ..." if len(label_names) > 12 else "")
            raise ValueError(f"unknown label {s!r}; this model knows: {shown or '(no labels)'}")
    return out


def drop_condition(cond: Condition, p: float, generator: torch.Generator | None = None) -> Condition:
    """Guidance dropout: mark each sample unconditional with probability p (CFG training)."""
    b = cond.batch_size
    if b is None or p <= 0:
        return cond
    drop = torch.rand(b, generator=generator) < p
    if cond.uncond is not None:
        drop = drop | cond.uncond.cpu()
    dev = (cond.labels if cond.labels is not None else cond.image).device
    return replace(cond, uncond=drop.to(dev))


@dataclass(frozen=True)
class LabelHiding:
    """How training hides attributes of multi-hot labels (``hide_labels``). Each sample is, independently:
    all known with probability ``p_all``; "user picks" with probability ``p_picks``: k ~ U{1..max_picks} of
    its present attributes known (fewer if it has fewer), everything else unknown, which is what sampling
    from the app's checkboxes asks; otherwise every attribute hidden at a rate r ~ U(0, 1) drawn per sample,
    so the network also sees known-absent attributes in every proportion."""

    p_all: float = 0.2
    p_picks: float = 0.6
    max_picks: int = 3

    def __post_init__(self):
        if min(self.p_all, self.p_picks) < 0 or self.p_all + self.p_picks > 1:
            raise ConfigError(f"label_hiding: p_all and p_picks must be >= 0 with a sum <= 1, "
                              f"got {self.p_all} and {self.p_picks}")
        if self.max_picks < 1:
            raise ConfigError(f"label_hiding.max_picks must be >= 1, got {self.max_picks}")


def hide_labels(labels: torch.Tensor, hiding: LabelHiding, generator: torch.Generator | None = None) -> torch.Tensor:
    """The ``known`` mask (B, L) float {0, 1} for multi-hot ``labels`` (B, L), drawn as ``hiding`` says.
    Cheap: five small draws and one double argsort over (B, L), whatever the sample's kind."""
    b, n = labels.shape
    kind = torch.rand(b, generator=generator)
    k = torch.randint(1, hiding.max_picks + 1, (b,), generator=generator)
    keys = torch.rand(b, n, generator=generator)
    rate = torch.rand(b, 1, generator=generator)
    present = labels > 0.5
    # rank of each present attribute in a random order (0 = first); absent ones rank after all present
    rank = torch.where(present, keys, keys + 2).argsort(dim=1).argsort(dim=1)
    picks = present & (rank < k[:, None])
    random_rate = torch.rand(b, n, generator=generator) >= rate
    known = torch.where((kind < hiding.p_all)[:, None], torch.ones_like(present),
                        torch.where((kind < hiding.p_all + hiding.p_picks)[:, None], picks, random_rate))
    return known.to(labels.dtype)


def resize_cond_image(image: torch.Tensor, size) -> torch.Tensor:
    """Resize a conditioning image (B, C, h, w) in [-1, 1] to ``size``: an int (square) or (H, W); area when
    shrinking, bilinear otherwise."""
    hw = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    if tuple(image.shape[-2:]) == hw:
        return image
    mode = "area" if image.shape[-1] > hw[1] else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(image, size=hw, mode=mode, **kw)


def augment_low_res(up: torch.Tensor, level: torch.Tensor | float, noise: torch.Tensor) -> torch.Tensor:
    """Noise conditioning augmentation (Ho et al. 2021, "Cascaded Diffusion Models", sec. 3.2):
    z = sqrt(1 - level^2) * up + level * noise, level in [0, 1] per image."""
    level = torch.as_tensor(level, dtype=up.dtype, device=up.device).reshape(-1, 1, 1, 1)
    return (1 - level ** 2).sqrt() * up + level * noise


BACK_PROJECTION_ROUNDS = 2     # bicubic rounds: smooth corrections
EXACT_ROUNDS = 4               # then block-constant rounds, each after clipping to the image range
AUGMENTED_INPUT_SCALE = 4     # a noise-augmented input is matched at 1/4 of its size: its colours, not its pixels


def back_projection_scale(aug_level: float, match_scale: int | None = None) -> int:
    """The scale at which a super-resolution result is matched to its input: ``match_scale`` where a cascade
    stage sets one, else 1, or AUGMENTED_INPUT_SCALE for an input the stage was told is noisy."""
    return match_scale or (AUGMENTED_INPUT_SCALE if aug_level > 0 else 1)


def back_project(x: torch.Tensor, low_res: torch.Tensor, scale: int = 1,
                 rounds: int = BACK_PROJECTION_ROUNDS) -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg 1991): x <- x + up(target - down(x)), ``rounds`` times, where
    target is ``low_res`` area-averaged to 1/scale of its size, down = area averaging to that size (how the
    training pairs' low-resolution images were made) and up = bicubic. Where x's size is a whole multiple of
    the target's, EXACT_ROUNDS more rounds clip x to [-1, 1] and add the residual block by block (up = nearest),
    which makes down(x) = target exactly (the area average of a constant block is that constant); the bicubic
    rounds alone leave a residual, largest where a correction runs into the image range. Only pixels that had
    to be clipped can stay (slightly) outside [-1, 1].

    A super-resolution sample must downsample back to its input. A network trained on small crops gets the
    image's low frequencies slightly wrong when it runs on the whole canvas (a tinted white background, a
    shifted hue); this puts them back from the input and leaves the detail the network drew. Measured on 8
    held-out emoji, 64 -> 128, 20 DPM-Solver++ steps: PSNR 30.7 -> 34.5 dB and SSIM 0.962 -> 0.977 at scale 1,
    33.0 dB and 0.968 at scale 4. scale > 1 is for an input the stage was told is noisy (noise augmentation
    in a cascade): at 1/4 size its speckle averages out, so the base stage's grain is not drawn back in.
    Exactness is what lets a cascade keep its base's figure: a 128 px stage matched at 1/2 of its 64 px input,
    itself matched pixel for pixel to the 32 px base, downsamples to the base's image."""
    target = _match_target(low_res, scale)
    h, w = target.shape[-2:]
    for _ in range(rounds):
        residual = target - F.interpolate(x, size=(h, w), mode="area")
        x = x + F.interpolate(residual, size=x.shape[-2:], mode="bicubic", align_corners=False)
    if x.shape[-2] % h or x.shape[-1] % w:      # not a whole multiple (an odd-size input at scale > 1)
        return x
    return _exact_rounds(x, target)


def _match_target(low_res: torch.Tensor, scale: int) -> torch.Tensor:
    """What back-projection matches: ``low_res`` area-averaged to 1/scale of its size (at least 1 pixel a side)."""
    h, w = max(1, low_res.shape[-2] // scale), max(1, low_res.shape[-1] // scale)
    return low_res if scale == 1 else F.interpolate(low_res, size=(h, w), mode="area")


def _exact_rounds(x: torch.Tensor, target: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """EXACT_ROUNDS of x <- clip(x) + nearest_up(target - area_down(clip(x))), at every block of ``target``'s grid
    or only where ``where`` (1 / 0 per target pixel) is 1; x's size a whole multiple of the target's."""
    for _ in range(EXACT_ROUNDS):
        x = x.clamp(-1, 1)
        residual = target - F.interpolate(x, size=target.shape[-2:], mode="area")
        x = x + F.interpolate(residual if where is None else where * residual, size=x.shape[-2:], mode="nearest")
    return x


EDGE_SPAN = 8 / 127.5       # a target pixel is an edge where its 3x3 neighbourhood spans more than 8 grey levels


def match_edges(x: torch.Tensor, low_res: torch.Tensor, scale: int = 1, span: float = EDGE_SPAN) -> torch.Tensor:
    """``back_project``'s exact matching, only at the blocks where its target (``low_res`` area-averaged to 1/scale)
    has an edge: a pixel whose 3x3 neighbourhood (edges replicated) spans more than ``span`` in some channel. Flat
    blocks keep x. A cascade stage's last denoising step (``samplers.final_denoise``) smooths the mottle that exact
    matching carries from the base into flat backgrounds; this puts the figure's blocks, where the drawing is
    followed, back on the input exactly (issue 40: grain 1.8 -> 0.8 grey levels, no drawing followed less). An
    x that is not a whole multiple of the target's size is returned as it is."""
    target = _match_target(low_res, scale)
    if x.shape[-2] % target.shape[-2] or x.shape[-1] % target.shape[-1]:
        return x
    padded = F.pad(target, (1, 1, 1, 1), mode="replicate")
    spread = (F.max_pool2d(padded, 3, 1) + F.max_pool2d(-padded, 3, 1)).amax(1, keepdim=True)
    return _exact_rounds(x, target, (spread > span).to(x.dtype))
