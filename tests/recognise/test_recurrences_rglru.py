"""transformers' RG-LRU (RecurrentGemma) swapped for one GatedLinearScan: equal to the library
eagerly (prefill, T = 1, cached decode, mid-sequence resets) and exported with a symbolic
batch and length, one scan node per recurrent layer."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.export import Dim

transformers = pytest.importorskip(
    "transformers", reason="the RG-LRU recogniser swaps transformers' RecurrentGemma block"
)
modeling = pytest.importorskip(
    "transformers.models.recurrent_gemma.modeling_recurrent_gemma",
    reason="this transformers has no RecurrentGemma",
)

from edgegate.recognise.recurrences import EdgegateForm, swap_recurrences  # noqa: E402
from edgegate.recognise.recurrences.base import adopt  # noqa: E402
from edgegate.recognise.recurrences.rglru import Rglru, RglruForm  # noqa: E402

RTOL = 1e-5
RG_LRU_PATHS = ["m.model.layers.0.temporal_block.rg_lru", "m.model.layers.1.temporal_block.rg_lru"]


def _config():
    return transformers.RecurrentGemmaConfig(
        vocab_size=256,
        hidden_size=64,
        lru_width=64,
        num_attention_heads=4,  # head_dim 16
        num_key_value_heads=1,
        intermediate_size=128,
        num_hidden_layers=3,
        block_types=["recurrent", "recurrent", "attention"],
        attention_window_size=16,
    )


class TokensToLogits(nn.Module):
    """use_cache=False: each recurrent block starts from a zero state (no conv or RG-LRU state
    is read or kept), the same numbers as a cached prefill."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.m(input_ids=tokens, use_cache=False).logits


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())


def _tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(_config()).eval()
    original = TokensToLogits(model)
    swapped = TokensToLogits(copy.deepcopy(model))
    report = swap_recurrences(swapped, (_tokens(2, 64),))
    return original, swapped, report


@pytest.fixture(scope="module")
def exported(models):
    _, swapped, _ = models
    dims = ({0: Dim("batch", min=1, max=8), 1: Dim("seq_len", min=1, max=256)},)
    with warnings.catch_warnings():  # the library's forward stores its final state on self
        warnings.filterwarnings("ignore", message="The tensor attributes")
        return torch.export.export(swapped, (_tokens(2, 64),), dynamic_shapes=dims, strict=False)


def test_recogniser_keys_on_the_method_the_forward_calls():
    config = _config()
    block = modeling.RecurrentGemmaRglru(config)
    recogniser = Rglru()
    assert recogniser.matches(block)
    assert not recogniser.matches(modeling.RecurrentGemmaRecurrentBlock(config, 0))
    assert not recogniser.matches(adopt(block, RglruForm))

    class NotALibraryBlock(nn.Module):  # defines and calls _rnn_scan, outside transformers
        def forward(self, x):
            return self._rnn_scan(x)

        def _rnn_scan(self, x):
            return x

    assert not recogniser.matches(NotALibraryBlock())


def test_each_rg_lru_is_swapped_for_gated_linear_scan(models):
    _, swapped, report = models
    assert [s.path for s in report.swapped] == RG_LRU_PATHS
    assert {(s.family, s.op) for s in report.swapped} == {("rg_lru", "GatedLinearScan")}
    assert all("_rnn_scan" in s.matched_by for s in report.swapped)
    assert not [t for t in report.traced if t.what == "RecurrentGemmaRglru"], report.traced
    for path in RG_LRU_PATHS:
        block = swapped.get_submodule(path)
        assert isinstance(block, EdgegateForm) and isinstance(block, modeling.RecurrentGemmaRglru)


@pytest.mark.parametrize("seq_len", [1, 37, 200])
def test_swapped_model_equals_the_library(models, seq_len):
    original, swapped, _ = models
    tokens = _tokens(2, seq_len, seed=seq_len)
    with torch.no_grad():
        assert _rel(swapped(tokens), original(tokens)) <= RTOL


def test_cached_decode_equals_the_library(models):
    """Prefill with a cache, then T = 1 steps that carry the RG-LRU state."""
    original, swapped, _ = models
    config, tokens = _config(), _tokens(2, 12, seed=1)

    def decode(model: nn.Module) -> torch.Tensor:
        model._setup_cache(config, 2, tokens.device, torch.float32)
        cache = transformers.DynamicCache(config=config)
        logits = [model(input_ids=tokens[:, :5], use_cache=True, cache=cache).logits]
        for t in range(5, tokens.shape[1]):
            step = model(
                input_ids=tokens[:, t : t + 1],
                position_ids=torch.tensor([[t]]),
                use_cache=True,
                cache=cache,
            )
            logits.append(step.logits)
        return torch.cat(logits, dim=1)

    with torch.no_grad():
        assert _rel(decode(swapped.m), decode(original.m)) <= RTOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seq_len", [1, 2, 30])
@pytest.mark.parametrize("with_state", [False, True])
def test_block_contract_outputs_state_and_resets(dtype, seq_len, with_state):
    """Same output and final state (and dtypes) as the library's _rnn_scan, with resets at
    t = 0, mid-sequence and in one batch row only."""
    torch.manual_seed(0)
    library = transformers.AutoModelForCausalLM.from_config(_config())
    block = library.model.layers[0].temporal_block.rg_lru.to(dtype)
    form = adopt(block, RglruForm)
    x = torch.randn(3, seq_len, 64, dtype=dtype)
    positions = torch.cat([torch.arange(20), torch.arange(10)])[None].repeat(3, 1)
    positions[1, 7] = 0
    positions = positions[:, :seq_len]
    state = torch.randn(3, 64) if with_state else None
    got, want = [], []
    for module, out in ((block, want), (form, got)):
        module.recurrent_states = state
        with torch.no_grad():
            out.append(module(x, positions))
        out.append(module.recurrent_states)
    assert got[0].dtype == want[0].dtype == dtype
    assert got[1].dtype == want[1].dtype == torch.float32
    output_tol = RTOL if dtype == torch.float32 else 2**-8  # one bf16 rounding step
    assert _rel(got[0], want[0]) <= output_tol
    assert _rel(got[1], want[1]) <= RTOL


def test_export_has_a_symbolic_length_and_one_scan_per_recurrent_layer(exported):
    scans = [
        n for n in exported.graph.nodes if n.target is torch.ops.edgegate.gated_linear_scan.default
    ]
    assert len(scans) == len(RG_LRU_PATHS)
    ranges = sorted((int(r.lower), int(r.upper)) for r in exported.range_constraints.values())
    assert ranges == [(1, 8), (1, 256)]


@pytest.mark.parametrize("batch", [1, 3])
def test_exported_model_equals_the_unswapped_library(models, exported, batch):
    original, _, _ = models
    module = exported.module()
    for seq_len in (1, 17, 64, 200):
        tokens = _tokens(batch, seq_len, seed=seq_len)
        with torch.no_grad():
            assert _rel(module(tokens), original(tokens)) <= RTOL, (batch, seq_len)
