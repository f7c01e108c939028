import sys, json, torch
from pathlib import Path
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
torch.set_num_threads(1)
from diffusion_core import denoisers, load
from diffusion_core.evaluation.picks import evaluate_picks
from guidance_colours import measure, TONES  # TONES from skin_tone_colours
from diffusion_core.data import DataConfig, load_data
plain = denoisers.ClipX0.__call__
variant, g = sys.argv[1], float(sys.argv[2])
lo, hi = {"late": (0, 500), "early": (500, 1000), "all": (0, 1000), "mid": (200, 800)}[variant]
def call(self, x_t, t, cond):
    if self.mode == "dynamic" and not (lo <= int(t[0]) < hi):
        self.mode = "clip"; r = plain(self, x_t, t, cond); self.mode = "dynamic"; return r
    return plain(self, x_t, t, cond)
denoisers.ClipX0.__call__ = call
model = Path("runs/snap/emoji-partial-now-dyn")
pipe = load(model)
real = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
names = list(pipe.label_names); labels = torch.from_numpy(real.labels) > 0.5
lum = torch.tensor([0.299, 0.587, 0.114]); res = {}
for tone in TONES:
    have = labels[:, [names.index("woman"), names.index(tone)]].all(1).nonzero().flatten()
    r = torch.tensor(measure(real.batch(have)["image"], "centre")["rgb"])
    x = pipe.sample(8, sampler="dpm++", steps=20, guidance=g, labels=["woman", tone], seed=0)
    m = torch.tensor(measure(x, "centre")["rgb"])
    res[tone] = round(float(m @ lum / (r @ lum)), 3)
m = evaluate_picks(model, per_pick=8, guidance=g, progress=False)
print(variant, g, res, m["generated_mean"], m["generated_mean_judgeable"], flush=True)
