"""Which operators a frozen ViT-B-32 vision tower runs under bf16 autocast and when held in bf16.

    python benchmarks/frozen_autocast_profile.py

Prints the torch profiler's top operators for one forward (batch 2, 224 px, random weights) each way.
Under autocast, ``nn.MultiheadAttention`` leaves its fused fast path (unfused ``addmm``/``bmm``) and
every weight is copied to bf16 (``aten::copy_`` per weight); held (cast once, autocast off) it runs
``_native_multi_head_attention``. Timings here mean little on a CPU without native bf16 (emulated).
"""

import copy

import open_clip
import torch
from torch.profiler import ProfilerActivity, profile

from mmt_ard.models.frozen import frozen_in

torch.manual_seed(0)
tower = open_clip.create_model("ViT-B-32-quickgelu").visual.eval().requires_grad_(False)
held = frozen_in(copy.deepcopy(tower), torch.bfloat16)
x = torch.rand(2, 3, 224, 224)
for name in ("autocast", "held"):
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        if name == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                tower(x)
        else:
            held(x)
    print(f"== {name}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
