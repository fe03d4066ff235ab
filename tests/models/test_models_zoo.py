"""Every zoo model: builds, runs, fits the size budget; gates sit where the quantizer looks."""

from __future__ import annotations

import pytest
import torch

from edgegate.models import (
    build_model,
    count_macs,
    count_params,
    example_inputs,
    list_models,
)
from edgegate.models.blocks import ClippedSoftmax, Gate, HeadwiseGate, SqueezeExcite
from edgegate.models.gc_mobilenet import GCMobileNet

NAMES = [info.name for info in list_models()]
MAX_PARAMS = 450_000
# exist to be big: INT8 speed (the CNN) and weight-bound decode speed (the LM) are measured on them
FULL_SIZE = {"mobilenet-v3-large-se": 4_500_000, "gla-lm-25m": 26_000_000}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_zoo_lists_the_expected_models() -> None:
    assert set(NAMES) == {
        "mobilenet-v3-se",
        "mobilenet-v3-large-se",
        "gc-mobilenet",
        "qvit",
        "qlm",
        "gla-lm",
        "gla-lm-25m",
        "hgrn-lm",
        "gdn-lm",
    }
    for info in list_models():
        assert info.task in ("image", "gc", "lm") and info.description
        assert info.options, info.name


@pytest.mark.parametrize("name", NAMES)
def test_model_builds_runs_and_fits_budget(name: str) -> None:
    model = build_model(name).eval()
    inputs = example_inputs(name, batch=2)
    with torch.no_grad():
        out = model(*inputs)
    info = next(i for i in list_models() if i.name == name)
    if info.task == "lm":
        assert inputs[0].dtype == torch.long and inputs[0].shape == (2, 128)
        assert out.shape == (2, 128, 256)
    elif info.task == "gc":
        logits, prob = out
        assert logits.shape == (2, 10) and prob.shape == (2,)
    else:
        assert inputs[0].shape == (2, *info.default_input) and out.shape == (2, 10)
    budget = FULL_SIZE.get(name, MAX_PARAMS)
    assert count_params(model) <= budget
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert state_bytes <= max(2 * 1024 * 1024, 4.5 * budget)
    assert count_macs(model, example_inputs(name, batch=1, seq_len=16)) > 0


@pytest.mark.parametrize(
    "spec", ["qvit:attention=clipped", "qvit:attention=gated", "qlm:attention=gated"]
)
def test_attention_variants_fit_budget(spec: str) -> None:
    model = build_model(spec).eval()
    assert count_params(model) <= MAX_PARAMS
    with torch.no_grad():
        model(*example_inputs(spec, seq_len=16))


def test_mobilenet_any_input_size() -> None:
    model = build_model("mobilenet-v3-se").eval()
    with torch.no_grad():
        for size, batch in ((32, 2), (64, 2), (224, 1)):
            assert model(*example_inputs("mobilenet-v3-se", batch, size)).shape == (batch, 10)
    gray = build_model("mobilenet-v3-se:in_channels=1").eval()
    (x,) = example_inputs("mobilenet-v3-se:in_channels=1", input_size=40)
    assert x.shape == (1, 1, 40, 40) and gray(x).shape == (1, 10)


def test_mobilenet_se_gates_are_hardsigmoid() -> None:
    model = build_model("mobilenet-v3-se")
    ses = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(ses) == 9  # MobileNetV3-Small: SE in 9 of 11 blocks
    assert all(isinstance(se.gate, Gate) and se.gate.kind == "hardsigmoid" for se in ses)
    sig = build_model("mobilenet-v3-se:se_gate=sigmoid")
    assert {m.kind for m in sig.modules() if isinstance(m, Gate)} == {"sigmoid"}


def test_gate_modules_where_expected() -> None:
    gc = build_model("gc-mobilenet")
    kinds = [m.kind for m in gc.stage1.gc.modules() if isinstance(m, Gate)]
    assert sorted(kinds) == ["hardsigmoid", "sigmoid"]
    clipped = build_model("qlm:attention=clipped")
    assert sum(isinstance(m, ClippedSoftmax) for m in clipped.modules()) == 3
    gated = build_model("qvit:attention=gated")
    assert sum(isinstance(m, HeadwiseGate) for m in gated.modules()) == 4
    for name in ("gla-lm", "hgrn-lm", "gdn-lm"):
        assert any(isinstance(m, Gate) for m in build_model(name).modules()), name


def test_clipped_default_gamma_is_minus_alpha_over_t() -> None:
    vit = build_model("qvit:attention=clipped")
    cs = next(m for m in vit.modules() if isinstance(m, ClippedSoftmax))
    assert cs.gamma == pytest.approx(-2.0 / 17)
    lm = build_model("qlm:attention=clipped,alpha=4")
    cs = next(m for m in lm.modules() if isinstance(m, ClippedSoftmax))
    assert cs.gamma == pytest.approx(-4.0 / 128)


def test_gc_stages_compose_exactly() -> None:
    model = build_model("gc-mobilenet").eval()
    assert isinstance(model, GCMobileNet)
    assert model.positive_class == 0 and model.threshold == 0.5
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, prob = model(x)
        prob1, z = model.stage1(x)
        assert torch.equal(model.stage2(z), logits)
        assert torch.equal(prob1, prob)
    assert z.shape[2:] == (4, 4)  # GC at stride 8


def test_gc_two_stage_stops_low_gate_samples() -> None:
    model = build_model("gc-mobilenet").eval()
    with torch.no_grad():  # spread the gate so some samples pass and some stop
        model.gc.head[-1].weight.normal_(0, 5.0)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        logits, prob = model(x)
    model.threshold = float(prob.median())
    calls: list[int] = []
    model.stage2.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    out = model.two_stage(x)
    expected = prob >= model.threshold
    assert torch.equal(out.passed, expected) and 0 < int(expected.sum()) < 8
    assert calls == [int(expected.sum())]
    assert torch.allclose(out.logits, logits[expected], atol=1e-5)
    assert torch.equal(out.gate_prob, prob)


def test_gc_l1_penalty_differentiable() -> None:
    model = build_model("gc-mobilenet")
    logits, prob = model(torch.randn(2, 3, 32, 32))
    target = torch.tensor([1.0, 0.0])
    loss = (
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3]))
        + torch.nn.functional.binary_cross_entropy(prob, target)
        + 0.1 * model.gc.l1_penalty()
    )
    loss.backward()
    assert model.gc.channel_logits.grad is not None
    assert model.gc.channel_logits.grad.abs().sum() > 0
    assert 0.0 <= model.gc.compression_ratio() <= 1.0


@pytest.mark.parametrize("name", ["gla-lm", "hgrn-lm", "gdn-lm"])
def test_scan_lm_streaming_equals_one_pass(name: str) -> None:
    model = build_model(f"{name}:depth=2,dim=32").eval()
    (tokens,) = example_inputs(name, batch=2, seq_len=14)
    with torch.no_grad():
        full = model(tokens)
        first = model.forward_with_state(tokens[:, :6])
        second = model.forward_with_state(tokens[:, 6:], *first[1:])
        zero = model.forward_with_state(tokens, *model.init_states(2))
    assert len(first) == 3  # logits + one state per layer
    assert torch.allclose(torch.cat([first[0], second[0]], 1), full, atol=1e-5)
    assert torch.allclose(zero[0], full, atol=1e-6)


def test_streaming_module_exports_states_as_inputs() -> None:
    model = build_model("hgrn-lm:depth=2,dim=32").eval()
    step = model.streaming()
    (tokens,) = example_inputs("hgrn-lm", seq_len=5)
    states = model.init_states(1)
    program = torch.export.export(step, (tokens, *states))
    names = [n.name for n in program.graph.nodes if n.op == "placeholder"]
    assert names[-3:] == ["tokens", "states_0", "states_1"]
    out = program.module()(tokens, *states)
    ref = step(tokens, *states)
    assert len(out) == 3 and all(
        torch.allclose(a, b, atol=1e-6) for a, b in zip(out, ref, strict=True)
    )


def test_the_full_size_cnn_has_mobilenet_v3_large_cost_at_224() -> None:
    """About 220 M MACs at 224x224 (MobileNetV3-Large's 219 M with 1000 classes): the size
    where INT8 kernels have work to save."""
    model = build_model("mobilenet-v3-large-se").eval()
    macs = count_macs(model, (torch.zeros(1, 3, 224, 224),))
    assert 200e6 <= macs <= 230e6
    assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == 8


def test_large_gla_lm_is_25m_params_and_names_its_training_command():
    from edgegate.models import get_info, shipped_weights

    info = get_info("gla-lm-25m")
    assert info.task == "lm" and shipped_weights("gla-lm-25m") is None
    assert 20_000_000 <= count_params(build_model("gla-lm-25m")) <= 50_000_000
    assert info.train_command.startswith("edgegate train gla-lm-25m --data stdlib ")
    assert count_params(build_model("gla-lm-25m:depth=1")) < 4_000_000  # options still apply


def test_weightless_zoo_entry_evaluates_to_its_training_command(run_cli):
    from tests.conftest import assert_one_line_error

    result = run_cli("evaluate", "gla-lm-25m")
    assert_one_line_error(result, "no shipped weights for 'gla-lm-25m'", "--max-steps 300")
    listed = run_cli("models")
    assert listed.code == 0
    assert "gla-lm-25m ships no weights (random init until trained): edgegate train" in (
        listed.stdout
    )


@pytest.mark.slow
def test_documented_training_command_runs(run_cli, tmp_path):
    """The zoo entry's command as written, capped at 2 steps (about 25 s on 2 cores, most of
    it scoring the 86,400 test bytes)."""
    import shlex

    from edgegate.models import get_info, load_checkpoint

    args = shlex.split(get_info("gla-lm-25m").train_command)[1:]
    out = tmp_path / "gla-lm-25m.pt"
    args[args.index("-o") + 1] = str(out)
    args[args.index("--max-steps") + 1] = "2"
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    checkpoint = load_checkpoint(out)
    assert checkpoint["spec"] == "gla-lm-25m" and checkpoint["extra"]["steps"] == 2
