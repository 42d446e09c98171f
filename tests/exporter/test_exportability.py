"""Exact rewrites of what torch.onnx refuses, checked against PyTorch's own modules on cases worked by hand."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from exporter.exportability import (
    ExactAdaptiveAvgPool2d,
    ExactAdaptiveMaxPool2d,
    averaging_matrix,
    exact_rewrites,
    windows,
)


def test_windows_are_pytorchs_adaptive_windows():
    # 2 → 7: output i covers [floor(2i/7), ceil(2(i+1)/7)): the first three read row 0, the middle both, the last row 1
    assert windows(2, 7) == [(0, 1), (0, 1), (0, 1), (0, 2), (1, 2), (1, 2), (1, 2)]
    assert windows(5, 3) == [(0, 2), (1, 4), (3, 5)]  # overlapping windows
    assert windows(1, 7) == [(0, 1)] * 7
    assert torch.equal(averaging_matrix(5, 3), torch.tensor([[.5, .5, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0],
                                                             [0, 0, 0, .5, .5]]))


@pytest.mark.parametrize(("in_size", "out_size"),
                         [((1, 1), (7, 7)), ((2, 2), (7, 7)), ((5, 3), (3, 7)), ((13, 9), (6, 4))])
def test_exact_pools_equal_pytorchs(in_size, out_size):
    x = torch.randn(2, 3, *in_size)
    assert torch.allclose(ExactAdaptiveAvgPool2d(in_size, out_size)(x), nn.AdaptiveAvgPool2d(out_size)(x), atol=1e-6)
    assert torch.equal(ExactAdaptiveMaxPool2d(in_size, out_size)(x), nn.AdaptiveMaxPool2d(out_size)(x))


def test_rewrites_apply_only_where_the_exporter_refuses_and_are_undone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveMaxPool2d((3, 3)), nn.AdaptiveAvgPool2d((3, None)),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    example = torch.randn(1, 3, 7, 7)  # the conv makes 5×5: max 5 → 3 (does not divide), avg (3, None) (None)
    reference = model(example)
    with exact_rewrites(model, example) as lines:
        assert isinstance(model[1], ExactAdaptiveMaxPool2d) and isinstance(model[2], ExactAdaptiveAvgPool2d)
        assert type(model[3]) is nn.AdaptiveAvgPool2d  # 3 → 1 divides: the exporter writes it as it is
        buffer = io.BytesIO()
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=17, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})
    assert lines == ["rewrote AdaptiveMaxPool2d at `1` (5×5 → 3×3 at input 7×7) as the max over each window's slice"
                     " — exact, at this input size only",
                     "rewrote AdaptiveAvgPool2d at `2` (3×3 → 3×3 at input 7×7) as two constant averaging matrices"
                     " — exact, at this input size only"]
    assert type(model[1]) is nn.AdaptiveMaxPool2d and type(model[2]) is nn.AdaptiveAvgPool2d  # put back
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    batch = torch.randn(2, 3, 7, 7)
    (out,) = session.run(None, {"input": batch.numpy()})
    np.testing.assert_allclose(out, model(batch).detach().numpy(), atol=1e-5)
    assert torch.equal(model(example), reference)


class _FunctionalPools(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = nn.functional
        return torch.cat([pool.adaptive_avg_pool2d(x, 3), pool.adaptive_max_pool2d(x, (3, 3)),
                          pool.interpolate(x, size=(3, 3), mode="area"),
                          pool.adaptive_avg_pool2d(x, 1).expand(-1, -1, 3, 3)], dim=1)


def _exported_equals_pytorch(model: nn.Module, example: torch.Tensor, atol: float = 1e-5) -> list[str]:
    """Export under the rewrites (legacy exporter, dynamic batch), run the file at batch 2 in ONNX Runtime against
    PyTorch; the rewrite lines."""
    buffer = io.BytesIO()
    with torch.no_grad(), exact_rewrites(model, example) as lines:
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=17, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    batch = torch.rand(2, *example.shape[1:])
    with torch.no_grad():
        expected = model(batch)
    expected = expected if isinstance(expected, torch.Tensor) else expected[0]
    np.testing.assert_allclose(session.run(None, {"input": batch.numpy()})[0], expected.numpy(), atol=atol)
    return lines


def test_pooling_called_as_a_function_is_rewritten_exactly():
    """8×7 → 3×3 average, max and area interpolation, called as functions: each is traced as the exact form (one line
    each); the global average (divides) is left alone."""
    lines = _exported_equals_pytorch(_FunctionalPools().eval(), torch.rand(1, 2, 8, 7))
    assert lines == [f"rewrote {name} called in a forward (8×7 → 3×3) as {how} — exact, at this input size only"
                     for name, how in [("adaptive_avg_pool2d", "two constant averaging matrices"),
                                       ("adaptive_max_pool2d", "the max over each window's slice"),
                                       ("interpolate(mode='area')", "two constant averaging matrices")]]


def test_third_party_models_that_pool_out_of_the_modules_reach_export():
    """smp's PSPNet pools with ``F.interpolate(mode='area')`` when it sees an ONNX export, and transformers' UperNet
    calls its pooling modules from a plain list: at 128 px (a 4×4 map pooled to 3×3 and 6×6) both refused to export
    before; now each file equals PyTorch."""
    import segmentation_models_pytorch as smp
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    torch.manual_seed(0)
    psp = smp.PSPNet("resnet18", encoder_weights=None, classes=3, encoder_depth=3).eval()
    lines = _exported_equals_pytorch(psp, torch.rand(1, 3, 128, 128), atol=1e-4)
    assert any("interpolate(mode='area') called in a forward" in line for line in lines), lines
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    upernet = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone, hidden_size=16,
                                                           auxiliary_in_channels=32, num_labels=3)).eval()
    upernet.config.return_dict = False
    lines = _exported_equals_pytorch(upernet, torch.rand(1, 3, 128, 128), atol=1e-4)
    assert [line.split(" (")[0] for line in lines] == [
        "rewrote AdaptiveAvgPool2d at `decode_head.psp_modules.2.0`",
        "rewrote AdaptiveAvgPool2d at `decode_head.psp_modules.3.0`"]
