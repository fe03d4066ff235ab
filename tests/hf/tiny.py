"""Tiny random transformers causal LMs saved with ``save_pretrained``: what `hf:` tests load.

Byte vocabularies (256) so edgegate's stdlib text feeds them; a few layers of each block kind.
Seeded, so a folder built twice holds the same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch


def qwen3_next_config():
    from transformers import Qwen3NextConfig

    return Qwen3NextConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        linear_num_key_heads=2,
        linear_num_value_heads=4,  # grouped key heads: each serves two value heads
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        linear_conv_kernel_dim=4,
        layer_types=["linear_attention", "full_attention"],
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        decoder_sparse_step=1,
        max_position_embeddings=1024,
        partial_rotary_factor=0.25,
    )


def mamba2_config():
    from transformers import Mamba2Config

    return Mamba2Config(
        vocab_size=256,
        hidden_size=64,
        num_hidden_layers=2,
        state_size=16,
        head_dim=16,
        expand=2,
        num_heads=8,
        n_groups=2,
        chunk_size=16,
    )


def recurrent_gemma_config():
    from transformers import RecurrentGemmaConfig

    return RecurrentGemmaConfig(
        vocab_size=256,
        hidden_size=64,
        lru_width=64,
        num_attention_heads=4,
        num_key_value_heads=1,
        intermediate_size=128,
        num_hidden_layers=3,
        block_types=["recurrent", "recurrent", "attention"],
        attention_window_size=16,
    )


def mamba_config():
    """Mamba (v1): a recurrence edgegate has no recogniser for (its torch path loops over T)."""
    from transformers import MambaConfig

    return MambaConfig(vocab_size=256, hidden_size=32, state_size=4, num_hidden_layers=1)


CONFIGS = {
    "mamba": mamba_config,
    "qwen3_next": qwen3_next_config,
    "mamba2": mamba2_config,
    "recurrent_gemma": recurrent_gemma_config,
}


def save_tiny(kind: str, folder: Path, seed: int = 0) -> Path:
    """Build ``kind``'s tiny random model and save it (config.json + safetensors)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[kind]())
    model.save_pretrained(folder)
    return folder
