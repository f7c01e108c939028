import sys, json, torch
from pathlib import Path
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/main/scripts")
torch.set_num_threads(1)
from diffusion_core import denoisers, load
from diffusion_core.evaluation.picks import evaluate_picks
from guidance_colours import tone_colours
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
res = {k: v["luma_ratio"] for k, v in tone_colours(pipe, real, g).items()}
m = evaluate_picks(model, per_pick=8, guidance=g, progress=False)
print(variant, g, res, m["generated_mean"], m["generated_mean_judgeable"], flush=True)
