"""Compaction is exact for every block family the runner prunes: the compacted model's outputs against
the masked model's, max |diff| on random inputs.

Contract: for each family (timm registry models at a small geometry: embed 64, depth 2, 4 heads,
32 px, patch 4), the runner's model holding the timm model's weights (biases drawn away from timm's
zero start so a missed bias entry would show) is masked with random whole-group masks (about 40% of
heads and 50% of neurons removed, uneven per block) and compacted; both run on the same random
inputs (eval mode, fp32, CPU). Reported: max |compact - masked| over ``--seeds`` mask/input draws, and
max |runner model - timm model| (EVA's attention is rebuilt as timm's AttentionRope). Target: 0.0.
No dependency beyond the project's.

Usage:
    python benchmarks/compaction_exactness.py --seeds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

FAMILIES = {
    "plain ViT (Attention + Mlp)": ("vit_small_patch16_224", {}),
    "gated MLP, packed (GluMlp: DINOv2-g)": ("vit_giant_patch14_dinov2", {"mlp_ratio": 4.0}),
    "gated MLP, split (SwiGLU: AIMv2)": ("aimv2_large_patch14_224", {}),
    "EVA attention + GluMlp (eva02, qk_norm)": ("eva02_tiny_patch14_224", {"qk_norm": True}),
    "EVA attention + SwiGLU (eva02, swiglu_align_to)": ("eva02_tiny_patch14_224", {"swiglu_align_to": 8}),
}


def measure(arch: str, kwargs: dict, seeds: int) -> dict:
    import timm
    import torch

    from pruning_runner.compaction import compact_model
    from pruning_runner.groups import (
        GroupMasks,
        VitLayout,
        apply_param_masks_,
        create_param_masks,
        model_params,
    )
    from pruning_runner.model import ModelSpec, create_vit, load_init_weights

    kwargs = {"embed_dim": 64, "depth": 2, "num_heads": 4, **kwargs}
    spec = ModelSpec(arch=arch, img_size=32, patch_size=4, num_classes=10, model_kwargs=kwargs)
    worst, convert = 0.0, 0.0
    for seed in range(seeds):
        torch.manual_seed(seed)
        ref = timm.create_model(arch, img_size=32, patch_size=4, num_classes=10, **kwargs).eval()
        with torch.no_grad():
            for name, p in ref.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.5)
        model = create_vit(spec).eval()
        load_init_weights(model, ref.state_dict(), source=arch)
        layout = VitLayout.from_model(model, target="both")
        g = torch.Generator().manual_seed(seed)
        keep = GroupMasks(torch.rand(2, layout.num_heads, generator=g) > 0.4,
                          torch.rand(2, layout.mlp_hidden, generator=g) > 0.5)
        keep.heads[:, 0] = keep.neurons[:, 0] = True
        x = torch.randn(16, 3, 32, 32, generator=g)
        with torch.no_grad():
            convert = max(convert, (model(x) - ref(x)).abs().max().item())
        params = model_params(model)
        apply_param_masks_(params, create_param_masks(params, keep, GroupMasks.full(layout), layout))
        small = compact_model(model, spec, GroupMasks.full(layout), keep, layout).eval()
        with torch.no_grad():
            worst = max(worst, (small(x) - model(x)).abs().max().item())
    return {"arch": arch, "kwargs": kwargs, "seeds": seeds, "max_abs_diff_compact_vs_masked": worst,
            "max_abs_diff_runner_vs_timm": convert}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    for family, (arch, kwargs) in FAMILIES.items():
        row = {"family": family, **measure(arch, kwargs, args.seeds)}
        rows.append(row)
        print(f"{family:50s} compact vs masked {row['max_abs_diff_compact_vs_masked']:.3g}   "
              f"runner vs timm {row['max_abs_diff_runner_vs_timm']:.3g}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.machine(), "torch": torch.__version__, "rows": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
