"""Bugs from issue 36 outside training, each against an independent reference written out here:

* back-projection (Irani & Peleg 1991) of non-square images at every augmentation level: the result
  block-averages back to its input at the matching scale (2x2 / (2s)x(2s) block means written out);
* the cascade size limit: exactly MAX_CASCADE_SIZE pixels a side loads, one more is refused;
* image i of a batch is image 0 of seed + i, for every kind of model (plain, cold with a prior, cascade);
* a settings link with a fractional steps or seed drops that value instead of running another setting.
"""
from __future__ import annotations

import pytest
import torch

from diffusion_core import CheckpointError, load, save_cascade
from diffusion_core.checkpoint import MAX_CASCADE_SIZE


# ---- 8. back-projection of non-square images -----------------------------------------------------

def block_means(x: torch.Tensor, k: int) -> torch.Tensor:
    """Means of the k x k blocks of x (B, C, H, W), H and W multiples of k: area downsampling written out."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // k, k, w // k, k).mean(dim=(3, 5))


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_back_projection_of_a_non_square_image_downsamples_to_its_target(scale):
    """back_project(x, low, scale) on a 16 x 24 image with an 8 x 12 input: the result's (2 scale)-blocks average
    to the input's scale-blocks (the target), for a wide and a tall image; height and width kept apart."""
    from diffusion_core.conditioning import back_project
    g = torch.Generator().manual_seed(scale)
    for hw in ((8, 12), (12, 8)):
        low = torch.rand((2, 3, *hw), generator=g) * 1.6 - 0.8
        x = torch.rand((2, 3, 2 * hw[0], 2 * hw[1]), generator=g) * 2 - 1
        out = back_project(x, low, scale)
        assert out.shape == x.shape
        assert torch.allclose(block_means(out, 2 * scale), block_means(low, scale), atol=1e-5), (hw, scale)


@pytest.mark.parametrize("aug_level", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("hw", [(8, 12), (12, 8)])
def test_a_non_square_super_resolution_result_downsamples_to_its_input(tmp_path, make_model, aug_level, hw):
    """An SR model run on a non-square input at every augmentation level: the result is twice the input's height
    and width, and its blocks average to the input's (at 1/4 of its size, 4x4 input blocks, when the input is
    noise-augmented; pixel for pixel otherwise), before the final clip to the image range."""
    make_model(tmp_path / "sr", seed=21, task="super_resolution", low_res=8, high_res=16,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=16,
                         channel_mults=(1, 2, 2)))
    sr = load(tmp_path / "sr")
    low = torch.rand((2, 3, *hw), generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    out = list(sr.stream(2, low_res=low, steps=2, sampler="ddim", seed=4, aug_level=aug_level))[-1].x_next
    assert out.shape == (2, 3, 2 * hw[0], 2 * hw[1])
    k = 1 if aug_level == 0 else 4
    assert torch.allclose(block_means(out, 2 * k), block_means(low, k), atol=1e-4), (aug_level, hw)


# ---- 9. the cascade size limit, at and one above it ----------------------------------------------

def _sr_stage(make_model, folder, low: int, high: int, seed: int):
    make_model(folder, seed=seed, task="super_resolution", low_res=low, high_res=high,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=32,
                         channel_mults=(1,) * 6, attention_resolutions=()))     # the middle block's attention at 16 px


@pytest.mark.parametrize("base, side", [(32, MAX_CASCADE_SIZE), (27, MAX_CASCADE_SIZE + 1)])
def test_a_cascade_at_the_size_limit_loads_and_one_pixel_more_is_refused(tmp_path, make_model, base, side):
    """MAX_CASCADE_SIZE (512) is the largest side a cascade may make: a base of 32 px and a x16 stage make
    exactly 512 and load; a base of 27 px and a x19 stage make 513 and are refused, naming the size."""
    assert side % base == 0
    make_model(tmp_path / "base", seed=1, unet=dict(in_channels=3, out_channels=3, image_size=base,
                                                    channel_mults=(1,), attention_resolutions=()))
    _sr_stage(make_model, tmp_path / "sr", base, side, seed=2)
    save_cascade(tmp_path / "casc", [{"path": "../base"}, {"path": "../sr"}])
    if side <= MAX_CASCADE_SIZE:
        assert load(tmp_path / "casc").image_size == side
    else:
        with pytest.raises(CheckpointError, match=f"{side} px"):
            load(tmp_path / "casc")


# ---- 10. image i of a batch is image 0 of seed + i, for every kind of model ------------------------------

def _plain(folder, make_model):
    make_model(folder, seed=3, unet=dict(num_labels=3), label_names=("a", "b", "c"))
    return dict(sampler="ddpm", steps=3, labels=["b"], guidance=2.0)


def _cold(degradation):
    def build(folder, make_model):
        from diffusion_core import save_model
        cfg, net = make_model(folder, seed=4, diffusion=dict(degradation=degradation, prediction="x0", T=20))
        prior = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(9)) * 2 - 1      # 16 distinct starts
        save_model(folder, cfg, net.state_dict(), extra={"prior": prior})
        return dict(sampler="cold", steps=3)
    return build


def _cascade(folder, make_model):
    make_model(folder / "base", seed=20, unet=dict(in_channels=3, out_channels=3))
    make_model(folder / "sr", seed=21, task="super_resolution", low_res=8,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=16))
    save_cascade(folder / "casc", [{"path": "../base"}, {"path": "../sr", "aug_level": 0.2, "steps": 2}])
    return dict(sampler="ddim", steps=2)


def _cascade_denoised(folder, make_model):
    """A cascade whose stages end with a denoising step (``denoise_t``, issue 40)."""
    _cascade(folder, make_model)
    save_cascade(folder / "casc", [{"path": "../base", "denoise_t": 30},
                                   {"path": "../sr", "aug_level": 0.2, "steps": 3, "denoise_t": 10}])
    return dict(sampler="ddpm", steps=3)


KINDS = {"plain": _plain, "cold-blur": _cold("blur"), "cold-pixelate": _cold("pixelate"), "cold-mask": _cold("mask"),
         "cascade": _cascade, "cascade-denoised": _cascade_denoised}


@pytest.mark.parametrize("kind", KINDS)
def test_image_i_of_a_batch_is_image_0_of_seed_plus_i(tmp_path, make_model, kind):
    """The seed contract (one RNG stream per image, seeded seed + i, as in NVlabs/edm): a batch of 4 with seed s is,
    bit for bit, the four runs of one image with seeds s .. s + 3, for a plain guided model, a cold model starting
    from its prior (each image picks its start with its own stream), and a cascade (each stage's noise, the
    augmentation of its input included, per image). The 4 images differ (the streams are not one stream)."""
    kw = KINDS[kind](tmp_path / "m", make_model)
    pipe = load(tmp_path / "m" / "casc" if kind.startswith("cascade") else tmp_path / "m")
    batch = pipe.sample(4, seed=40, **kw)
    for i in range(4):
        assert torch.equal(batch[i], pipe.sample(1, seed=40 + i, **kw)[0]), (kind, i)
    assert all(not torch.equal(batch[0], batch[i]) for i in range(1, 4))


# ---- 11. settings links with fractional whole numbers -------------------------------------------

class _Models:
    def names(self):
        return ["m"]


@pytest.mark.slow      # imports the app (Gradio, ~5 s): not in the quick subset
@pytest.mark.parametrize("key, value", [("steps", "2.5"), ("seed", "1.5"), ("batch", "2.5"), ("steps", "0.5"),
                                        ("seed", "-0.5")])
def test_a_fractional_whole_number_in_a_link_is_dropped_not_rounded(key, value):
    """steps=2.5 is not a run of 2 (or 3) steps, seed=1.5 not seed 1: the value is dropped and named, and the
    other values are kept."""
    from diffusion_app.generate import presets
    settings, dropped = presets.from_query({"model": ["m"], key: [value], "guidance": ["2.5"]}, _Models())
    assert dropped == [key] and key not in settings
    assert settings == {"model": "m", "guidance": 2.5}


@pytest.mark.slow      # imports the app
def test_whole_numbers_in_a_link_are_kept():
    from diffusion_app.generate import presets
    settings, dropped = presets.from_query({"model": ["m"], "steps": ["25"], "seed": ["7"], "batch": ["2.0"]},
                                           _Models())
    assert dropped == [] and settings == {"model": "m", "steps": 25, "seed": 7, "batch": 2}
    assert all(type(settings[k]) is int for k in ("steps", "seed", "batch"))
