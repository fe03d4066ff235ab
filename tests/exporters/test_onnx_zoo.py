"""Every zoo model through ONNX (fallback, and the ORT lowering where scans exist) vs eager."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgegate import __version__
from edgegate.exporters.onnx import export_onnx
from edgegate.models import build_model, example_inputs, list_models

SMALL = {
    "qvit": "qvit:attention=gated,depth=1",
    "qlm": "qlm:attention=clipped,depth=1",
    "gla-lm": "gla-lm:depth=1",
    "gla-lm-25m": "gla-lm-25m:depth=1",
    "hgrn-lm": "hgrn-lm:depth=1",
    "gdn-lm": "gdn-lm:depth=1",
}
SCAN_LMS = ("gla-lm", "hgrn-lm", "gdn-lm")
CNNS = (
    "mobilenet-v3-se",
    "mobilenet-v3-large-se",
    "gc-mobilenet",
)  # ~20 s each; their exports are validated elsewhere
CASES = [
    pytest.param(info.name, None, marks=[pytest.mark.slow] if info.name in CNNS else [])
    for info in list_models()
] + [pytest.param(name, "onnxruntime") for name in (*SCAN_LMS, "qlm")]


def _model(name: str):
    spec = SMALL.get(name, name)
    torch.manual_seed(0)
    return spec, build_model(spec).eval()


def _outputs(module, args) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*args)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize(
    "name,lower", CASES, ids=[f"{c.values[0]}-{c.values[1] or 'fallback'}" for c in CASES]
)
def test_zoo_model_matches_eager_at_other_batch_and_length(name, lower, tmp_path):
    spec, module = _model(name)
    path = export_onnx(
        module,
        example_inputs(spec, batch=1, seq_len=48 if name in SCAN_LMS else None),
        tmp_path / "m.onnx",
        lower=lower,
        metadata={"model": spec},
    )
    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta == {"edgegate_version": __version__, "model": spec}
    if name in SCAN_LMS:
        op = "LinearAttention" if lower else {"gla-lm": "GatedLinearAttention",
                                             "hgrn-lm": "GatedLinearScan",
                                             "gdn-lm": "GatedDeltaRule"}[name]  # fmt: skip
        assert op in {n.op_type for n in model.graph.node}
    args = example_inputs(spec, batch=2, seq_len=37 if name in SCAN_LMS else None)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: args[0].numpy()})
    for ref, out in zip(_outputs(module, args), got, strict=True):
        assert ref.shape == out.shape
        assert np.abs(out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("name", SCAN_LMS)
@pytest.mark.parametrize("lower", [None, "onnxruntime"])
def test_scan_lm_streams_through_onnx(name, lower, tmp_path):
    """Layer states as explicit inputs and outputs: two calls on halves == one on the whole."""
    spec, module = _model(name)
    streaming = module.streaming().eval()
    tokens = example_inputs(spec, batch=2, seq_len=20)[0]
    states = module.init_states(2)
    state_names = [f"state_{i}" for i in range(len(states))]
    path = export_onnx(
        streaming,
        (tokens[:, :8], *states),
        tmp_path / "s.onnx",
        lower=lower,
        input_names=["tokens", *state_names],
        output_names=["logits", *[f"{n}_out" for n in state_names]],
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def call(chunk, carried):
        feed = {"tokens": chunk.numpy(), **dict(zip(state_names, carried, strict=True))}
        logits, *new = session.run(None, feed)
        return logits, new

    zeros = [s.numpy() for s in states]
    whole, _ = call(tokens, zeros)
    first, carried = call(tokens[:, :11], zeros)
    second, _ = call(tokens[:, 11:], carried)
    np.testing.assert_allclose(np.concatenate([first, second], 1), whole, atol=1e-4)
    ref = _outputs(module, (tokens,))[0]
    np.testing.assert_allclose(whole, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
