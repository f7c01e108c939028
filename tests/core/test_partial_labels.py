"""Partial attribute sets (issue 20): the ``known`` mask through Condition, the U-Net, training and sampling."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion_core import load
from diffusion_core.conditioning import (Condition, LabelHiding, cat_conditions, drop_condition, hide_labels,
                                         picks_condition)
from diffusion_core.config import ConfigError, ModelConfig, from_dict, to_dict
from diffusion_core.training import PARENT_RECORD, Trainer, load_train_config
from diffusion_core.unet import UNet, load_parent_state, timestep_embedding

from conftest import randomize, tiny_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ["unet.base_channels=8", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1", "unet.attention_resolutions=[8]",
        "batch_size=4", "checkpoint_every=2", "sample_every=0", "log_every=1", "sample_steps=2", "sample_images=4",
        "threads=1"]
# the emoji model shipped before partial labels (full-vector meaning, no label_mask): its weights as they were in
# checkpoints/emoji until session 9, when the partial-label fine-tune replaced it
OLD_EMOJI = ROOT / "tests/data/emoji_full_vector"
HAS_EMOJI_MODEL = (OLD_EMOJI / "model.safetensors").is_file()


def _cond(b=4, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(b, n, generator=g) < 0.4).float()
    known = (torch.rand(b, n, generator=g) < 0.5).float()
    return Condition(labels=labels, uncond=torch.tensor([False, True, False, False][:b]), known=known)


# ---- Condition ------------------------------------------------------------------------------------
def test_condition_carries_the_known_mask():
    c = _cond()
    assert torch.equal(c.index(slice(1, 3)).known, c.known[1:3])
    assert torch.equal(c.index(torch.tensor([3, 0])).known, c.known[[3, 0]])
    assert torch.equal(c.repeat(2).known, c.known.repeat_interleave(2, dim=0))
    assert torch.equal(c.to("cpu").known, c.known)
    assert torch.equal(c.null().known, c.known) and bool(c.null().uncond.all())
    assert torch.equal(drop_condition(c, 0.5, torch.Generator().manual_seed(1)).known, c.known)
    both = cat_conditions(c, c.null())
    assert torch.equal(both.known, torch.cat([c.known, c.known])) and torch.equal(both.labels, torch.cat([c.labels] * 2))
    # no mask on one side means "all known": filled with ones, not zeros
    full = Condition(labels=c.labels, uncond=c.uncond)
    mixed = cat_conditions(full, c)
    assert torch.equal(mixed.known, torch.cat([torch.ones_like(c.known), c.known]))
    assert cat_conditions(full, full).known is None


# ---- the U-Net -------------------------------------------------------------------------------------
def _inputs(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, 8, 8, generator=g), torch.randint(0, 100, (b,), generator=g)


def test_unet_without_label_mask_is_unchanged(tiny_net):
    cfg, net = tiny_net(num_labels=5)
    assert not cfg.unet.label_mask and net.known_proj is None
    assert not any(k.startswith("known_proj") for k in net.state_dict())
    x, t = _inputs()
    c = _cond()
    with torch.no_grad():
        plain = net(x, t, Condition(labels=c.labels, uncond=c.uncond))
        # the embedding is exactly the pre-mask code's: label_proj(labels), null_emb where uncond
        emb = net.time_mlp(timestep_embedding(t, 8))
        want = emb + torch.where(c.uncond[:, None], net.null_emb[None].expand(4, -1), net.label_proj(c.labels))
        assert torch.equal(net.embed(t, Condition(labels=c.labels, uncond=c.uncond), 4), want)
        # such a network cannot express "unknown": unknown attributes read as absent
        assert torch.equal(net(x, t, c), net(x, t, Condition(labels=c.labels * c.known, uncond=c.uncond)))
        assert torch.equal(plain, net(x, t, replace(c, known=torch.ones_like(c.known))))
    # config files written before the field existed load with it off
    data = json.loads(json.dumps(to_dict(cfg)))
    del data["unet"]["label_mask"]
    assert from_dict(ModelConfig, data).unet.label_mask is False


@pytest.mark.skipif(not HAS_EMOJI_MODEL, reason="tests/data/emoji_full_vector not present")
@pytest.mark.slow
def test_full_vector_emoji_model_samples_as_before():
    """A model without label_mask (the emoji model shipped before partial labels) samples as it did with the code
    before the known mask existed (commit e3048b1, 1 thread): names -> full vector, and per-image label tensors,
    both guided."""
    ref = load_file(str(ROOT / "tests/data/emoji_before_label_mask.safetensors"))
    e = load(OLD_EMOJI)
    got = e.sample(4, sampler="dpm++", steps=10, guidance=3.0, labels=["woman", "dark skin tone"], seed=0)
    lab = torch.zeros(4, 52)
    lab[:, [1, 9, 21]] = 1
    lab[2, 28] = 1
    got_t = e.sample(4, sampler="ddim", steps=10, guidance=2.0, labels=lab, seed=5)
    # bit-identical on the machine that wrote it (a Xeon); other CPUs round differently and 10 guided steps grow
    # it: 2e-4 on an AVX2-only EPYC. A changed condition moves pixels by tenths
    assert (got - ref["emoji_names"]).abs().max() <= 1e-3
    assert (got_t - ref["emoji_tensor"]).abs().max() <= 1e-3


def _grown(seed=0):
    pcfg = tiny_config(dict(num_labels=5))
    parent = randomize(UNet(pcfg.unet), seed)
    child = UNet(replace(pcfg.unet, label_mask=True)).eval()
    load_parent_state(child, pcfg.unet, parent.state_dict())
    return parent, child


def test_zero_init_transfer_reproduces_the_parent_on_full_labels():
    parent, child = _grown()
    assert torch.equal(child.known_proj.weight, torch.zeros_like(child.known_proj.weight))
    x, t = _inputs()
    c = _cond()
    full = Condition(labels=c.labels, uncond=c.uncond)
    with torch.no_grad():
        want = parent(x, t, full)
        assert torch.equal(child(x, t, full), want)
        assert torch.equal(child(x, t, replace(full, known=torch.ones_like(c.known))), want)
        # once W_k is trained, "unknown" differs from "known absent" and the uncond rows stay the parent's
        child.known_proj.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
        partial = child(x, t, c)
        assert not torch.allclose(partial[~c.uncond], want[~c.uncond])
        assert torch.equal(partial[c.uncond], want[c.uncond])


def test_parent_transfer_refuses_other_differences():
    pcfg = tiny_config(dict(num_labels=5))
    parent = UNet(pcfg.unet)
    for other in (dict(label_mask=True, base_channels=16), dict(label_mask=False, num_labels=6)):
        with pytest.raises(ValueError, match="differs"):
            load_parent_state(UNet(replace(pcfg.unet, **other)), pcfg.unet, parent.state_dict())
    masked = replace(pcfg.unet, label_mask=True)
    with pytest.raises(ValueError, match="differs"):     # dropping the mask would lose known_proj
        load_parent_state(UNet(pcfg.unet), masked, UNet(masked).state_dict())


# ---- training ---------------------------------------------------------------------------------------
def _within(frac, p, n):
    """frac is within 5 binomial standard deviations of p over n draws."""
    return abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_hide_labels_rates():
    """Each kind of sample alone, then the mix at its rates (5 sigma bounds over 40,000 samples)."""
    n, L = 40_000, 12
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(n, L, generator=g) < 0.25).float()
    labels[:, 0] = 1                                   # every sample has at least one attribute (its group)
    present = labels.sum(1)
    assert bool(hide_labels(labels, LabelHiding(p_all=1.0, p_picks=0.0), g).bool().all())
    # user picks: only present attributes known, k ~ U{1..3} of them, at most the number present
    known = hide_labels(labels, LabelHiding(p_all=0.0, p_picks=1.0, max_picks=3), g)
    assert set(known.unique().tolist()) <= {0.0, 1.0} and bool((known <= labels).all())
    count = known.sum(1)
    assert bool((count == present.clamp(max=3)).logical_or(count < present.clamp(max=3)).all())
    assert bool((count >= 1).all()) and bool((count[present == 1] == 1).all())
    many = present >= 4
    for k in (1, 2, 3):
        assert _within((count[many] == k).float().mean().item(), 1 / 3, int(many.sum())), k
    # the picked attributes are spread over the present ones (not always the first)
    assert known[many].sum(0)[1:].min() > 0
    # the rest: every attribute hidden at a per-sample rate r ~ U(0, 1), present or absent alike
    known = hide_labels(labels, LabelHiding(p_all=0.0, p_picks=0.0), g)
    frac = known.mean(1)
    # Var(frac) = Var(r) + E[r (1 - r)] / L = 1/12 + 1/(6 L) (a per-sample rate, not one rate for all)
    assert abs(frac.mean().item() - 0.5) < 0.01 and abs(frac.std().item() - math.sqrt(1 / 12 + 1 / (6 * L))) < 0.01
    assert abs(known[labels == 1].mean() - known[labels == 0].mean()) < 0.01
    # the mix: all known with p_all, plus the random kind's E[(1 - r)^L] = 1 / (L + 1)
    known = hide_labels(labels, LabelHiding(p_all=0.3, p_picks=0.5), g)
    assert _within(known.bool().all(1).float().mean().item(), 0.3 + 0.2 / (L + 1), n)
    with pytest.raises(ConfigError):
        LabelHiding(p_all=0.6, p_picks=0.5)


def _emoji_like_parent(tmp_path):
    """A tiny multi-label dataset (emoji, 24 images) parent run, saved as a model folder."""
    from diffusion_core.data.emoji import EMOJI_TEST, FONT
    if not (Path(EMOJI_TEST).exists() and Path(FONT).exists()):
        pytest.skip("emoji packages not installed")
    common = TINY + ["data.source=emoji", "data.channels=3", "data.limit=24", "steps=1"]
    parent = Trainer(load_train_config(None, common + [f"out_dir={tmp_path / 'p'}"]), progress=False).run()
    return common, parent


@pytest.mark.slow
def test_training_hides_attributes_only_with_label_mask(tmp_path):
    common, parent = _emoji_like_parent(tmp_path)
    plain = Trainer(load_train_config(None, common + [f"out_dir={tmp_path / 'a'}", "batch_size=64"]), progress=False)
    assert plain.make_batch()[3].known is None
    cfg = load_train_config(None, common + [f"out_dir={tmp_path / 'b'}", "batch_size=2000", "unet.label_mask=true",
                                            "label_hiding.p_all=0.25", "label_hiding.p_picks=0.5", "p_uncond=0"])
    tr = Trainer(cfg, progress=False)
    cond = tr.make_batch()[3]
    labels, known = cond.labels, cond.known
    L = labels.shape[1]
    assert _within(known.bool().all(1).float().mean().item(), 0.25 + 0.25 / (L + 1), 2000)
    only_present = ((known <= labels).all(1) & ~known.bool().all(1)).float().mean().item()
    assert only_present >= 0.5 - 5 * math.sqrt(0.25 / 2000)


@pytest.mark.slow
def test_grown_run_starts_as_its_parent_and_records_the_lineage(tmp_path):
    common, parent = _emoji_like_parent(tmp_path)
    cfg = load_train_config(None, common + [f"out_dir={tmp_path / 'c'}", f"parent={parent}", "unet.label_mask=true"])
    tr = Trainer(cfg, progress=False)
    pnet = load(parent).net
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([5, 500, 999])
    lab = torch.as_tensor(tr.data.labels[:3]).float()
    full = Condition(labels=lab, uncond=torch.zeros(3, dtype=torch.bool))
    tr.net.eval()
    with torch.no_grad():
        assert torch.equal(tr.net(x, t, full), pnet(x, t, full))
    out = tr.run()
    record = json.loads((out / "training.json").read_text())
    assert record["parent"]["path"] == str(parent)
    assert record["parent"]["training"]["all_commands"] == json.loads((parent / "training.json").read_text())["all_commands"]
    assert (tmp_path / "c" / PARENT_RECORD).is_file() and load(out).config.unet.label_mask
    bad = load_train_config(None, common + [f"out_dir={tmp_path / 'd'}", f"parent={parent}", "unet.base_channels=16"])
    with pytest.raises(ConfigError, match="differs"):
        Trainer(bad, progress=False)


# ---- sampling ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [True, False])
def test_pipeline_builds_the_picks_condition(tmp_path, make_model, mask):
    names = ("woman", "man", "cat", "heart", "red")
    make_model(tmp_path / "m", unet=dict(num_labels=5, label_mask=mask), label_names=names, multi_label=True)
    pipe = load(tmp_path / "m")
    c = pipe.stages[0].condition(3, ["cat", "Red"])
    want = torch.tensor([[0, 0, 1, 0, 1]] * 3, dtype=torch.float32)
    assert torch.equal(c.labels, want) and not bool(c.uncond.any())
    if mask:      # picks present and known, every other attribute unknown
        assert torch.equal(c.known, want)
    else:         # the full vector, as the model was trained: everything else absent
        assert c.known is None
    assert pipe.stages[0].condition(2, torch.ones(2, 5)).known is None      # full label vectors: all known
    assert bool(pipe.stages[0].condition(2, []).uncond.all())
    assert torch.equal(picks_condition([2, 4], 5, 3, True, mask).labels, want)
    x = pipe.sample(2, sampler="dpm++", steps=3, guidance=2.0, labels=["cat"], seed=0)
    assert x.shape == (2, 1, 8, 8)


# ---- evaluation as users pick ---------------------------------------------------------------------
def test_picks_measures_and_colours():
    from diffusion_core.evaluation.picks import PICKS, includes_all, mean_colours
    logits = torch.tensor([[1.0, -1.0, 2.0], [1.0, 1.0, -0.5], [-1.0, 3.0, 3.0]])
    assert includes_all(logits, [0]).tolist() == [True, True, False]
    assert includes_all(logits, [0, 2]).tolist() == [True, False, False]
    img = torch.full((2, 3, 64, 64), -1.0)
    img[:, 0, 28:36, 28:36] = 1.0           # a red centre at 64 px is the central 4x4 at 32 px
    c = mean_colours(img)
    assert c["centre_rgb"][1:] == [0.0, 0.0] and abs(c["centre_rgb"][0] - 255 * 16 / 64) <= 0.05 + 1e-9   # rounded to 0.1
    assert len(PICKS) >= 20 and all(1 <= len(p) <= 3 for p in PICKS) and len(set(PICKS)) == len(PICKS)


def test_evaluate_picks_end_to_end(tmp_path, make_model):
    from diffusion_core.data.emoji import ATTRIBUTES, EMOJI_TEST, FONT
    from diffusion_core.evaluation.picks import evaluate_picks, format_table
    if not (Path(EMOJI_TEST).exists() and Path(FONT).exists()) or not (ROOT / "checkpoints/classifier-emoji-attrs").is_dir():
        pytest.skip("emoji packages or the picks' attribute classifier not present")
    make_model(tmp_path / "m", unet=dict(num_labels=len(ATTRIBUTES), label_mask=True, in_channels=3, out_channels=3,
                                         image_size=32), label_names=ATTRIBUTES, multi_label=True)
    picks = (("woman", "dark skin tone"), ("Flags",))
    m = evaluate_picks(tmp_path / "m", ROOT / "checkpoints/classifier-emoji-attrs", per_pick=2, steps=1, picks=picks,
                       progress=False)
    assert m["picks"] == 2 and [r["pick"] for r in m["rows"]] == [list(p) for p in picks]
    assert "unspecified" in m["labels_mean"]
    for r in m["rows"]:
        assert 0 <= r["generated"] <= 1 and r["real_count"] >= 10 and r["real"] >= 0.8
    assert m["judgeable_picks"] == 2 and m["real_mean_judgeable"] == m["real_mean"]
    assert "mean over 2 picks" in format_table(m)


def test_held_guidance_guides_the_held_picks_at_weight_one(tmp_path, make_model):
    """Issue 20, session 15: with ``sampling.held_labels`` the second pass of guidance is, per row, the held picks
    alone (known and present, everything else unknown) instead of the null condition, so
        x0 = x0(held picks) + w (x0(all picks) - x0(held picks)),
    written out here from separate passes of the network; a row without a held pick is plain CFG, bit for bit."""
    from diffusion_core.config import SamplingDefaults
    from diffusion_core.denoisers import ClassifierFreeGuidance, ModelDenoiser
    names = ("woman", "man", "cat", "dark", "red")
    held = SamplingDefaults(held_labels=("dark", "red"))
    with pytest.raises(ConfigError, match="label_mask"):
        tiny_config(dict(num_labels=5), label_names=names, multi_label=True, sampling=held)
    with pytest.raises(ConfigError, match="'blue' not in label_names"):
        tiny_config(dict(num_labels=5, label_mask=True), label_names=names, multi_label=True,
                    sampling=SamplingDefaults(held_labels=("blue",)))
    cfg, net = make_model(tmp_path / "held", seed=3, unet=dict(num_labels=5, label_mask=True), label_names=names,
                          multi_label=True, sampling=held)
    make_model(tmp_path / "plain", seed=3, unet=dict(num_labels=5, label_mask=True), label_names=names,
               multi_label=True)
    pipe, plain = load(tmp_path / "held"), load(tmp_path / "plain")
    # the formula, against separate passes of the saved network
    den = ModelDenoiser(net, pipe.stages[0].schedule, "eps")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([70, 30])
    cond = picks_condition([0, 3], 5, 2, True, True)              # woman + dark: dark is held
    only_dark = Condition(labels=torch.tensor([[0., 0, 0, 1, 0]] * 2), known=torch.tensor([[0., 0, 0, 1, 0]] * 2),
                          uncond=torch.zeros(2, dtype=torch.bool))
    c, h, u = den(x, t, cond), den(x, t, only_dark), den(x, t, cond.null())
    assert (h.x0_hat - u.x0_hat).abs().max() > 1e-3               # the held pass is not the null pass
    out = ClassifierFreeGuidance(den, 3.0, pipe.stages[0].held_mask())(x, t, cond)
    assert torch.allclose(out.x0_hat, h.x0_hat + 3.0 * (c.x0_hat - h.x0_hat), atol=1e-5)
    assert torch.allclose(out.eps_hat, h.eps_hat + 3.0 * (c.eps_hat - h.eps_hat), atol=1e-5)
    # through the pipeline: picks with a held attribute sample differently; picks without one exactly as before
    kw = dict(sampler="dpm++", steps=4, guidance=3.0, seed=1)
    assert not torch.allclose(pipe.sample(2, labels=["woman", "dark"], **kw), plain.sample(2, labels=["woman", "dark"], **kw))
    assert torch.equal(pipe.sample(2, labels=["woman", "cat"], **kw), plain.sample(2, labels=["woman", "cat"], **kw))
    assert torch.equal(pipe.sample(2, labels=["woman", "dark"], **{**kw, "guidance": 1.0}),
                       plain.sample(2, labels=["woman", "dark"], **{**kw, "guidance": 1.0}))
    assert torch.equal(pipe.sample(2, labels=["woman", "dark"], hold=False, **kw),      # a run can switch it off
                       plain.sample(2, labels=["woman", "dark"], **kw))
    full = torch.tensor([[1., 0, 0, 1, 0]] * 2)                     # a full label vector is guided plainly
    assert torch.equal(pipe.sample(2, labels=full, **kw), plain.sample(2, labels=full, **kw))


def test_plain_guidance_from_the_command_line(tmp_path, make_model):
    """`sample --plain-guidance` (and `evaluate --picks --plain-guidance`) switch held guidance off for one run."""
    import numpy as np
    from PIL import Image
    from diffusion_core.__main__ import main
    from diffusion_core.config import SamplingDefaults
    names = ("woman", "man", "cat", "dark", "red")
    for name, sampling in (("held", SamplingDefaults(held_labels=("dark",))), ("plain", SamplingDefaults())):
        make_model(tmp_path / name, seed=3, unet=dict(num_labels=5, label_mask=True), label_names=names,
                   multi_label=True, sampling=sampling)

    def png(model, *extra):
        out = tmp_path / f"out-{model}-{len(extra)}"
        assert main(["sample", "--model", str(tmp_path / model), "--n", "1", "--steps", "3", "--sampler", "ddim",
                     "--guidance", "3", "--label", "woman", "--label", "dark", "--no-progress", "--out", str(out),
                     *extra]) == 0
        return np.asarray(Image.open(next(out.glob("*.png"))))
    plain = png("plain")
    assert np.array_equal(png("held", "--plain-guidance"), plain)
    assert not np.array_equal(png("held"), plain)
