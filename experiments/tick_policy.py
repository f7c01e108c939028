"""The shared network's tick policy, without the server: 30 sampling threads of fashion's example (DPM-Solver++(3M)
10 Karras, guidance 2, 4 images each) through one ``SharedNet``, arriving at random within 1 s, as in
``benchmarks/classroom.py``. Per policy (arrival order, the old rule; least progress first) and tick cap (rows of
32 px): time from arrival to the first step p50 / p95, to the last step p95, images/s.

    python experiments/tick_policy.py [ROUNDS]      (2 threads; nothing else running)
"""
import json, random, sys, threading, time, torch
from diffusion_core import load
from diffusion_core.runtime import shared as S

def old_take(self):
    self._drop_cancelled()
    if not self._pending:
        return []
    key, group, pixels = self._pending[0].key, [], 0
    for c in self._pending:
        if c.key == key and (not group or pixels + c.pixels <= self.max_pixels):
            group.append(c); pixels += c.pixels
    for c in group:
        self._pending.remove(c)
    return group
new_take = S.SharedNet._take

pipe = load("checkpoints/fashion")
kw = dict(sampler="dpm++3m", steps=10, spacing="karras", guidance=2.0, labels=["T-shirt/top"])
for rec in pipe.stream(4, seed=0, **kw): pass       # warm-up

def one(policy, cap, n=30, seed=0):
    S.SharedNet._take = old_take if policy == "old" else new_take
    for k, (key, sn) in pipe.stages[0].shared.items():
        sn.max_pixels = cap * 32 * 32
    rng = random.Random(seed); res = [None] * n; t_zero = time.perf_counter()
    def visitor(i, delay):
        time.sleep(delay); a = time.perf_counter(); first = None
        for rec in pipe.stream(4, seed=10 * i, **kw):
            if first is None: first = time.perf_counter() - a
        res[i] = (first, time.perf_counter() - a, time.perf_counter() - t_zero)
    ths = [threading.Thread(target=visitor, args=(i, rng.random())) for i in range(n)]
    for t in ths: t.start()
    for t in ths: t.join()
    f = sorted(r[0] for r in res); d = sorted(r[1] for r in res); span = max(r[2] for r in res)
    q = lambda v, p: v[int(round(p * (len(v) - 1)))]
    return dict(policy=policy, cap=cap, first_p50=round(q(f, .5), 2), first_p95=round(q(f, .95), 2),
                done_p95=round(q(d, .95), 2), img_s=round(4 * n / span, 2))

print(torch.get_num_threads(), "threads")
for rnd in range(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
    for policy, cap in (("old", 256), ("new", 256), ("new", 64), ("new", 128), ("new", 32)):
        print(json.dumps(one(policy, cap, seed=rnd)), flush=True)
