"""Mamba-2 SSD mixers (transformers' ``mamba2_scan_forward``) become one GatedLinearAttention:
swapped models agree with the library's own code, export with a dynamic batch and length, and
generation with a cache still runs the library's code."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.export import Dim

pytest.importorskip("transformers", reason="the Mamba-2 recogniser swaps transformers' mixers")

from transformers import AutoModelForCausalLM, Mamba2Config  # noqa: E402
from transformers.models.mamba2 import modeling_mamba2  # noqa: E402

from edgegate.recognise.recurrences import swap_recurrences  # noqa: E402
from edgegate.recognise.recurrences.mamba2 import ssd_scan_forward  # noqa: E402

VOCAB, HIDDEN, LAYERS, CHUNK = 256, 64, 2, 16
RTOL = 1e-5  # of the output's own scale: fp32 scans agree to about 1e-7
DYNAMIC = ({0: Dim("batch", min=1, max=8), 1: Dim("seq_len", min=1, max=256)},)


class Logits(nn.Module):
    """tokens -> logits, without a cache: the call edgegate exports."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens, use_cache=False).logits


def mamba2(groups: int, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    config = Mamba2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        state_size=16,
        head_dim=16,
        expand=2,
        num_heads=2 * HIDDEN // 16,
        n_groups=groups,
        chunk_size=CHUNK,
        **overrides,
    )
    return AutoModelForCausalLM.from_config(config).eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max()) / float(want.abs().max())


def scan_nodes(program: torch.export.ExportedProgram) -> int:
    return sum(
        node.op == "call_function" and "edgegate.gated_linear_attention" in str(node.target)
        for node in program.graph.nodes
    )


@pytest.mark.parametrize("groups", [1, 2])
def test_mixers_swapped_and_outputs_unchanged(groups: int) -> None:
    wrapper = Logits(mamba2(groups))
    inputs = {length: tokens(2, length) for length in (1, 37, 40)}  # 1, odd, above the chunk
    with torch.no_grad():
        before = {length: wrapper(t) for length, t in inputs.items()}

    report = swap_recurrences(wrapper, (inputs[37],))

    mixers = [f"model.backbone.layers.{i}.mixer" for i in range(LAYERS)]
    assert [s.path for s in report.swapped] == mixers
    assert {(s.family, s.op) for s in report.swapped} == {("mamba2_ssd", "GatedLinearAttention")}
    assert all("calls mamba2_scan_forward" in s.matched_by for s in report.swapped)
    assert not [t for t in report.traced if t.path in mixers]
    for path in mixers:
        mixer = wrapper.get_submodule(path)
        assert isinstance(mixer, modeling_mamba2.Mamba2Mixer)  # a subclass of the library's
    with torch.no_grad():
        for length, t in inputs.items():
            assert relative(wrapper(t), before[length]) < RTOL, length


def test_scan_matches_library_with_long_memory_and_a_step_limit() -> None:
    """The scan alone, in a regime where the state carries far past a chunk: slow decays,
    grouped B/C, a clamped step and T above both the library's and edgegate's chunk size."""
    model = mamba2(groups=2, time_step_limit=(0.001, 0.08))
    mixer = model.backbone.layers[0].mixer
    heads, groups, state, head_dim = mixer.num_heads, mixer.n_groups, mixer.ssm_state_size, 16
    torch.manual_seed(3)
    with torch.no_grad():
        mixer.A_log.copy_(torch.empty(heads).uniform_(-3.0, 1.0))  # A in [-2.7, -0.05]
        mixer.dt_bias.copy_(torch.empty(heads).uniform_(-5.0, -1.0))
        mixer.D.copy_(torch.randn(heads))
    batch, length = 2, 150
    x = torch.randn(batch, length, heads * head_dim)
    B = torch.randn(batch, length, groups * state)
    C = torch.randn(batch, length, groups * state)
    dt = torch.randn(batch, length, heads)
    with torch.no_grad():
        want = modeling_mamba2.mamba2_scan_forward(mixer, x, B, C, dt, None)
        got = ssd_scan_forward(mixer, x, B, C, dt, None)
    assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
    assert relative(got, want) < RTOL


def test_a_mixer_without_the_expected_attributes_runs_the_library_scan() -> None:
    mixer = mamba2(groups=1).backbone.layers[0].mixer
    del mixer.time_step_limit  # as a mixer that keeps it under another name
    x, dt = torch.randn(1, 5, 128), torch.randn(1, 5, 8)
    B, C = torch.randn(1, 5, 16), torch.randn(1, 5, 16)
    with pytest.raises(AttributeError, match="time_step_limit"):
        ssd_scan_forward(mixer, x, B, C, dt, None)  # the library's code ran, and failed


def test_generation_with_a_cache_matches_the_library() -> None:
    """With a cache (generate, edgegate's streaming step) the edgegate form reads the cache's
    recurrent state as the op's initial state and writes the final one back: a prefill then a
    one-token step equal the library's own cached scan to fp32 rounding."""
    model = mamba2(groups=2)
    original = copy.deepcopy(model)
    prompt = tokens(2, 21)
    # checked on a cache-free call, as edgegate swaps: a recorded call that carries a cache
    # cannot be re-run (the first run has already advanced the cache)
    report = swap_recurrences(Logits(model), (prompt,))
    assert len(report.swapped) == LAYERS

    def prefill_and_step(m: nn.Module) -> list[torch.Tensor]:
        with torch.no_grad():
            out = m(input_ids=prompt, use_cache=True)
            step = m(input_ids=prompt[:, -1:], cache=out.cache, use_cache=True)
        return [out.logits, step.logits, out.cache.layers[0].recurrent_states[0]]

    for got, want in zip(prefill_and_step(model), prefill_and_step(original), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_export_is_one_scan_per_layer_and_matches_the_library() -> None:
    original = Logits(mamba2(groups=2))
    wrapper = copy.deepcopy(original)
    swap_recurrences(wrapper, (tokens(2, 64),))

    program = torch.export.export(wrapper, (tokens(2, 64),), dynamic_shapes=DYNAMIC, strict=False)

    assert scan_nodes(program) == LAYERS
    exported = program.module()
    with torch.no_grad():
        for batch in (1, 3):
            for length in (1, 17, 64, 200):
                t = tokens(batch, length, seed=batch * 1000 + length)
                assert relative(exported(t), original(t)) < RTOL, (batch, length)


def _bamba() -> nn.Module:
    from transformers import BambaConfig

    config = BambaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_layer_indices=[1],
        mamba_n_heads=8,
        mamba_d_head=16,
        mamba_n_groups=2,
        mamba_d_state=16,
        mamba_chunk_size=CHUNK,
        max_position_embeddings=512,
    )
    return AutoModelForCausalLM.from_config(config).eval()


def _zamba2() -> nn.Module:
    from transformers import Zamba2Config

    config = Zamba2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        layers_block_type=["mamba", "hybrid"],
        num_attention_heads=4,
        num_key_value_heads=4,
        attention_head_dim=16,
        mamba_d_state=16,
        mamba_headdim=16,
        n_mamba_heads=8,
        mamba_ngroups=1,
        chunk_size=CHUNK,
        max_position_embeddings=512,
    )
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize(
    ("build", "mixers"),
    [
        (_bamba, ["model.model.layers.0.mamba"]),
        (_zamba2, ["model.model.layers.0.mamba", "model.model.layers.1.mamba_decoder.mamba"]),
    ],
    ids=["bamba", "zamba2"],
)
def test_hybrid_models_share_the_recogniser(build, mixers: list[str]) -> None:
    torch.manual_seed(0)
    try:
        original = Logits(build())
    except Exception as err:  # a config this transformers cannot build on CPU
        pytest.skip(f"tiny {build.__name__[1:]} does not build here: {type(err).__name__}: {err}")
    wrapper = copy.deepcopy(original)

    report = swap_recurrences(wrapper, (tokens(2, 37),))

    assert [s.path for s in report.swapped] == mixers
    assert {s.op for s in report.swapped} == {"GatedLinearAttention"}
    program = torch.export.export(wrapper, (tokens(2, 64),), dynamic_shapes=DYNAMIC, strict=False)
    assert scan_nodes(program) == len(mixers)
    exported = program.module()
    with torch.no_grad():
        for batch, length in ((1, 1), (3, 17), (1, 200)):
            t = tokens(batch, length, seed=length)
            assert relative(exported(t), original(t)) < RTOL, (batch, length)
