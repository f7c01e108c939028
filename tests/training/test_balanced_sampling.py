"""Attribute-balanced sampling (issue 39, ``training.objective.sample_weights``): image i is drawn with probability
proportional to max over its attributes a of (N / n_a)^p, against weights computed by hand here, and the draws of
``training_batch`` follow them; balance 0 leaves the data stream exactly as it was (old runs resume unchanged)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_core.training import Trainer, load_train_config
from diffusion_core.training.objective import sample_weights

TINY = ["unet.base_channels=8", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1", "unet.attention_resolutions=[]",
        "unet.dropout=0", "checkpoint_every=1000", "sample_every=0", "log_every=1000", "threads=1", "p_uncond=0"]
# four images, attributes a and b: a on images 0-2, b on image 2 only, image 3 has none (n_a = 3, n_b = 1, N = 4)
LABELS = [[1, 0], [1, 0], [1, 1], [0, 0]]


def test_weights_are_the_rarest_attributes_inverse_frequency_to_the_power():
    labels = np.array(LABELS, np.float32)
    # p = 1: images 0, 1 by a (4/3), image 2 by b, its rarer attribute (4/1), image 3 without attributes: 1
    assert torch.allclose(sample_weights(labels, 1.0), torch.tensor([4 / 3, 4 / 3, 4.0, 1.0], dtype=torch.float64))
    assert torch.allclose(sample_weights(labels, 0.5),
                          torch.tensor([(4 / 3) ** 0.5, (4 / 3) ** 0.5, 2.0, 1.0], dtype=torch.float64))
    assert sample_weights(labels, 0.0) is None and sample_weights(None, 1.0) is None


def test_a_mixed_stream_draws_that_share_balanced_and_the_rest_uniformly():
    """balance_mix m: probabilities (1 - m) / N + m w_i / sum(w); with p = 1, w = (4/3, 4/3, 4, 1), sum 23/3, so
    half balanced gives 1/8 + (2/23, 2/23, 6/23, 1.5/23); m = 0 is the uniform stream, m = 1 the weights as they
    were."""
    labels = np.array(LABELS, np.float32)
    half = sample_weights(labels, 1.0, 0.5)
    assert torch.allclose(half, torch.tensor([1 / 8 + 2 / 23, 1 / 8 + 2 / 23, 1 / 8 + 6 / 23, 1 / 8 + 1.5 / 23],
                                             dtype=torch.float64))
    assert torch.allclose(sample_weights(labels, 1.0, 0.0), torch.full((4,), 0.25, dtype=torch.float64))
    assert torch.equal(sample_weights(labels, 1.0, 1.0), sample_weights(labels, 1.0))


def _trainer(tmp_path, balance: float, batch: int, mix: float = 1.0) -> Trainer:
    """A multi-label folder data set of LABELS, image i a flat grey of value 40 * (i + 1)."""
    d = tmp_path / "imgs"
    d.mkdir(parents=True, exist_ok=True)
    rows = ["filename,a,b"]
    for i, lab in enumerate(LABELS):
        Image.fromarray(np.full((8, 8), 40 * (i + 1), np.uint8)).save(d / f"{i}.png")
        rows.append(f"{i}.png,{lab[0]},{lab[1]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    sets = [f"data.path={d}", "data.source=folder", "data.image_size=8", "data.channels=1", "data.labels=file",
            f"data.labels_file={tmp_path / 'labels.csv'}", f"balance={balance}", f"balance_mix={mix}",
            f"batch_size={batch}", f"out_dir={tmp_path / 'run'}"]
    tr = Trainer(load_train_config(None, TINY + sets), progress=False, workers=1)
    assert tr.data.multi_label
    return tr


def _which(tr, x0) -> torch.Tensor:
    """The data set index of each row (images are flat greys)."""
    greys = torch.tensor([40 * (i + 1) / 127.5 - 1 for i in range(len(LABELS))])
    return (x0[:, 0, 0, 0, None] - greys).abs().argmin(dim=1)


@pytest.mark.parametrize("mix", [1.0, 0.5], ids=["balanced", "mixed"])
def test_training_batches_draw_images_in_proportion_to_their_weights(tmp_path, mix):
    """The draws' frequencies within 4 sigma of (1 - mix) / N + mix w_i / sum(w), w = (4/3, 4/3, 4, 1)."""
    tr = _trainer(tmp_path, 1.0, 8000, mix=mix)
    x0, _, _, _ = tr.make_batch()
    counts = torch.bincount(_which(tr, x0), minlength=4).double()
    want = (1 - mix) / 4 + mix * torch.tensor([4 / 3, 4 / 3, 4.0, 1.0]) / (8 / 3 + 5)
    sd = (want * (1 - want) / 8000).sqrt()
    assert ((counts / 8000 - want).abs() < 4 * sd).all(), (counts / 8000, want)


@pytest.mark.parametrize("balance", [0.0])
def test_balance_zero_draws_exactly_the_uniform_stream(tmp_path, balance):
    tr = _trainer(tmp_path, balance, 64)
    g = torch.Generator().manual_seed(tr.cfg.seed * 1000 + 1)       # the trainer's data stream, rank 0
    expect = torch.randint(len(LABELS), (64,), generator=g)
    x0, _, _, _ = tr.make_batch()
    assert torch.equal(_which(tr, x0), expect)
