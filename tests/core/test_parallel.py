"""Row workers (parallel.py) and the cheap dropout mask: same function, other schedule of the work."""
import threading

import pytest
import torch
import torch.nn.functional as F

from diffusion_core.runtime import parallel
from diffusion_core.conditioning import Condition
from diffusion_core.runtime import ChunkedNet
from diffusion_core.training import backward_in_parts
from diffusion_core.unet import Dropout, UNet, dropout_mask

from conftest import randomize, tiny_config


def _batch(b, cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    size, ch = cfg.unet.image_size, cfg.unet.in_channels
    x = torch.randn(b, ch, size, size, generator=g)
    t = torch.randint(0, 100, (b,), generator=g)
    labels = F.one_hot(torch.arange(b) % cfg.unet.num_labels, cfg.unet.num_labels).float()
    return x, t, Condition(labels=labels, uncond=torch.arange(b) % 3 == 0), torch.randn(x.shape, generator=g)


def test_dropout_mask_keeps_1_minus_p_and_preserves_the_mean():
    x = torch.ones(64, 32, 16, 16).contiguous(memory_format=torch.channels_last)
    m = dropout_mask(x, 0.1, torch.Generator().manual_seed(0))
    cut = round(0.1 * 2 ** 15)
    scale = 2 ** 15 / (2 ** 15 - cut)
    assert m.unique().tolist() == pytest.approx([0.0, scale])
    kept = (m > 0).float().mean().item()
    n = m.numel()
    sd = (0.9 * 0.1 / n) ** 0.5
    assert abs(kept - (1 - cut / 2 ** 15)) < 5 * sd            # p rounded to a multiple of 2^-15
    assert abs(m.mean().item() - 1) < 5 * sd * scale             # inverted dropout: E[mask] = 1
    assert m.is_contiguous(memory_format=torch.channels_last)    # same layout as x
    # neighbours along every axis are independent (the four 16-bit lanes of one 64-bit draw included)
    k = (m > 0).float()
    for dim in range(4):
        a, b = k.narrow(dim, 0, k.shape[dim] - 1), k.narrow(dim, 1, k.shape[dim] - 1)
        assert abs((a * b).mean().item() - kept ** 2) < 0.01
    # a generator makes it reproducible; different seeds differ
    assert torch.equal(m, dropout_mask(x, 0.1, torch.Generator().manual_seed(0)))
    assert not torch.equal(m, dropout_mask(x, 0.1, torch.Generator().manual_seed(1)))


def test_dropout_module_train_eval_and_gradient():
    d = Dropout(0.25)
    x = torch.randn(8, 4, 6, 6, requires_grad=True)
    assert d.eval()(x) is x and Dropout(0.0).train()(x) is x
    torch.manual_seed(0)
    y = d.train()(x)
    torch.manual_seed(0)
    mask = dropout_mask(x, 0.25)
    assert torch.equal(y, x * mask)
    y.sum().backward()
    assert torch.equal(x.grad, mask)
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_split_rows():
    assert parallel.split_rows(64, 2) == [(0, 32), (32, 64)]
    assert parallel.split_rows(10, 3, min_rows=4) == [(0, 5), (5, 10)]
    assert parallel.split_rows(7, 2) == [(0, 7)]
    assert parallel.split_rows(5, 1) == [(0, 5)]
    # pieces of at most max_rows, in a multiple of the worker count
    assert parallel.split_rows(64, 2, max_rows=16) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    assert parallel.split_rows(100, 2, max_rows=32) == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert parallel.split_rows(32, 2, max_rows=32) == [(0, 16), (16, 32)]
    assert parallel.split_rows(6, 2, max_rows=2) == [(0, 6)]        # min_rows 4 wins


def test_run_pieces_carries_modes_and_restores_threads():
    before = torch.get_num_threads()
    seen = []

    def probe(i):
        seen.append((threading.current_thread().name, torch.is_inference_mode_enabled(),
                     torch.is_grad_enabled(), torch.get_num_threads()))
        return i

    with torch.inference_mode():
        assert parallel.run_pieces(probe, [(i,) for i in range(4)], count=2) == [0, 1, 2, 3]
    assert all(name.startswith("diffusion-core-rows") and inf and not grad and n == 1
               for name, inf, grad, n in seen)
    seen.clear()
    parallel.run_pieces(probe, [(0,), (1,)], grad=True, count=2)
    assert all(grad for _, _, grad, _ in seen)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("chunk", [0, 8])
def test_chunked_net_with_workers_matches_serial(chunk):
    cfg = tiny_config({"num_labels": 3})
    net = randomize(UNet(cfg.unet))
    x, t, cond, _ = _batch(21, cfg)
    with torch.inference_mode():
        par = ChunkedNet(net, chunk, workers=2)(x, t, cond)
        ser = ChunkedNet(net, chunk, workers=1)(x, t, cond)
        whole = net(x, t, cond)
    assert par.shape == x.shape
    if chunk:   # the same fixed pieces, computed on other threads: bit-identical
        assert torch.equal(par, ser)
    assert torch.allclose(par, whole, atol=1e-5)


def _recording_net(sizes, batch_dependent=False):
    def net(x, t, cond):
        sizes.append(x.shape[0])
        out = 2 * x + t.to(x.dtype).view(-1, 1, 1, 1)
        return out * (1 + 1e-3 * x.shape[0]) if batch_dependent else out
    return net


def test_workers_merge_chunks_only_where_rows_do_not_depend_on_the_call_size():
    """32 rows in 8-row chunks on 2 workers: each worker runs its two chunks as one 16-row call when the
    network gives every row the same output at any call size (checked once per network and shape), and
    keeps 8-row calls when it does not; either way the output is what 8-row calls give (the last chunk
    padded to 8 rows by repeating its last row)."""
    x = torch.randn(32, 1, 4, 4)
    t = torch.arange(32)
    for dependent in (False, True):
        sizes = []
        net = _recording_net(sizes, dependent)
        den = ChunkedNet(net, 8, workers=2)

        def chunked(n):
            idx = [list(range(i, min(i + 8, n))) for i in range(0, n, 8)]
            idx = [c + [c[-1]] * (8 - len(c)) for c in idx]
            return torch.cat([net(x[c], t[c], None)[:min(8, n - c[0])] for c in idx])

        with torch.inference_mode():
            out = den(x, t, None)
            sizes.clear()
            again = den(x, t, None)             # the check is remembered: only the real calls now
            assert sorted(sizes) == ([8, 8, 8, 8] if dependent else [16, 16])
            ref = chunked(32)
            assert torch.equal(out, ref) and torch.equal(again, ref)
            for n in (20, 9, 5):                      # 16 + 4 padded to 8; 8 + 1 padded; one padded chunk
                sizes.clear()
                got = den(x[:n], t[:n], None)
                assert sum(sizes) == -(-n // 8) * 8, (n, sizes)
                assert torch.equal(got, chunked(n)), n


def _grads(net):
    return [p.grad.clone() for p in net.parameters()]


def _loss_of(net, x, t, cond, eps):
    return lambda a, b: F.mse_loss(net(x[a:b], t[a:b], cond.index(slice(a, b))), eps[a:b])


def test_backward_in_parts_is_the_full_batch_gradient():
    cfg = tiny_config({"num_labels": 3})                      # dropout 0: the pieces see the same function
    net = randomize(UNet(cfg.unet)).train()
    x, t, cond, eps = _batch(16, cfg)
    loss = backward_in_parts(_loss_of(net, x, t, cond, eps), 16, list(net.parameters()), workers=2)
    parts = _grads(net)
    net.zero_grad(set_to_none=True)
    full = _loss_of(net, x, t, cond, eps)(0, 16)
    full.backward()
    assert torch.allclose(loss, full.detach(), rtol=1e-5)
    for a, b in zip(parts, _grads(net)):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_backward_in_parts_with_dropout_is_reproducible():
    cfg = tiny_config({"num_labels": 3, "dropout": 0.3})
    net = randomize(UNet(cfg.unet)).train()
    x, t, cond, eps = _batch(16, cfg)
    runs = []
    for _ in range(2):
        net.zero_grad(set_to_none=True)
        torch.manual_seed(5)                                 # the workers' dropout seeds come from here
        backward_in_parts(_loss_of(net, x, t, cond, eps), 16, list(net.parameters()), workers=2)
        runs.append(_grads(net))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    net.zero_grad(set_to_none=True)
    torch.manual_seed(6)
    backward_in_parts(_loss_of(net, x, t, cond, eps), 16, list(net.parameters()), workers=2)
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], _grads(net)))


@pytest.mark.slow
def test_seed_contract_with_row_workers_on_the_shipped_model():
    """The app's promise with the real fashion U-Net and 2 threads: a batch of 5 guided images (10 rows: two
    8-row chunks, computed by two single-threaded workers) or of 16 (two 16-row calls where merging applies)
    gives bit-identically the images that batches of one (one chunk, computed with 2 intra-op threads) give
    for the same seeds."""
    from pathlib import Path

    from diffusion_core.pipeline import load
    folder = Path(__file__).resolve().parents[2] / "checkpoints" / "fashion"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("checkpoints/fashion is not present")
    pipe = load(folder)
    pipe.workers = 2
    old_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        kw = dict(sampler="dpm++", steps=2, guidance=2.0, labels=["Sneaker"])     # the 2nd step is multistep
        big = pipe.sample(5, seed=40, **kw)
        for i in range(5):
            assert torch.equal(big[i:i + 1], pipe.sample(1, seed=40 + i, **kw)), i
        # 16 images = 32 rows: each worker may run its two chunks as one 16-row call (ModelDenoiser._merges)
        bigger = pipe.sample(16, seed=40, **kw)
        assert torch.equal(bigger[:5], big)
        for i in (8, 15):
            assert torch.equal(bigger[i:i + 1], pipe.sample(1, seed=40 + i, **kw)), i
    finally:
        torch.set_num_threads(old_threads)


def test_the_worker_count_and_the_layout_are_arguments():
    """Issue 19: how many row workers a ChunkedNet (or a Pipeline's stages, or backward_in_parts) uses, and a
    U-Net's memory layout, are arguments, not module globals a benchmark rewrites."""
    names = []

    def net(x, t, cond):
        names.append(threading.current_thread().name)
        return x
    x, t = torch.zeros(32, 1, 4, 4), torch.zeros(32, dtype=torch.long)
    with torch.inference_mode():
        ChunkedNet(net, 8, workers=1)(x, t, None)
        assert set(names) == {threading.current_thread().name}
        names.clear()
        ChunkedNet(net, 8, workers=2)(x, t, None)
        assert len(names) >= 2 and all(n.startswith("diffusion-core-rows") for n in names)
    cfg = tiny_config({"num_labels": 3})
    assert UNet(cfg.unet).channels_last is True and UNet(cfg.unet, channels_last=False).channels_last is False
    assert not hasattr(parallel, "WORKERS")


def test_rows_alone_run_on_the_callers_threads_and_keep_the_seed_contract(tmp_path, make_model):
    """Issue 40: a 128 px or larger stage runs each row alone (chunk 1) on all of the caller's intra-op threads, one
    row after another, never on single-threaded row workers: a lone image's row would then get 2 threads and a
    batch's rows 1 each, which round differently. So every call is one row, on the calling thread, with its thread
    count, and image i of a batch is image 0 of seed + i bit for bit, with 2 threads and 2 workers asked for."""
    from diffusion_core.pipeline import load
    seen = []

    def net(x, t, cond):
        seen.append((x.shape[0], threading.get_ident(), torch.get_num_threads()))
        return 2 * x + t.to(x.dtype).view(-1, 1, 1, 1)
    old_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.inference_mode():
            out = ChunkedNet(net, 1, workers=2)(torch.randn(5, 1, 4, 4), torch.arange(5), None)
        assert out.shape == (5, 1, 4, 4)
        assert seen == [(1, threading.get_ident(), 2)] * 5
        make_model(tmp_path / "sr", seed=3, task="super_resolution", low_res=128, high_res=256,
                   unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=256,
                             base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=()))
        sr = load(tmp_path / "sr")
        assert sr.chunk == 1
        sr.workers = 2
        low = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1
        three = sr.sample(3, low_res=low, steps=2, seed=6)
        for i in range(3):
            assert torch.equal(three[i], sr.sample(1, low_res=low[i:i + 1], steps=2, seed=6 + i)[0]), i
    finally:
        torch.set_num_threads(old_threads)
