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
