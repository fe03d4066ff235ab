"""Which recurrences a swap reports as left traced: a class named like a recurrence only
through its model's name (RecurrentGemmaRMSNorm) is none once the model's blocks are
recognised, and the model is reported whole when nothing is."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="the report is checked on transformers' RecurrentGemma and Mamba"
)

from edgegate.recognise.recurrences import swap_recurrences  # noqa: E402
from edgegate.recognise.recurrences.swap import swap_recurrences as swap_with  # noqa: E402


def _recurrent_gemma():
    config = transformers.RecurrentGemmaConfig(
        vocab_size=64,
        hidden_size=32,
        lru_width=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        num_hidden_layers=3,
        block_types=["recurrent", "recurrent", "attention"],
        attention_window_size=8,
    )
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def test_recognised_model_has_no_name_only_recurrences_left():
    report = swap_recurrences(_recurrent_gemma(), (torch.zeros(1, 8, dtype=torch.long),))
    assert len(report.swapped) == 2
    assert report.traced == []


def test_unrecognised_blocks_are_reported_by_their_own_name():
    report = swap_with(_recurrent_gemma(), None, [])
    assert [(t.path, t.what) for t in report.traced] == [
        ("model.layers.0.temporal_block", "RecurrentGemmaRecurrentBlock"),
        ("model.layers.1.temporal_block", "RecurrentGemmaRecurrentBlock"),
    ]


def test_a_model_recurrent_only_by_its_name_is_reported_block_by_block():
    config = transformers.MambaConfig(
        vocab_size=64, hidden_size=32, state_size=4, num_hidden_layers=2
    )
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    report = swap_recurrences(model, None)
    assert [(t.path, t.what) for t in report.traced] == [
        ("backbone.layers.0", "MambaBlock"),
        ("backbone.layers.1", "MambaBlock"),
    ]
