"""Gated building blocks: gates, SE, gated compression, attention variants, scan mixers."""

from edgegate.models.blocks.attention import (
    ATTENTION_VARIANTS,
    Attention,
    ClippedSoftmax,
    HeadwiseGate,
    default_gamma,
)
from edgegate.models.blocks.common import MLP, ConvBNAct, make_divisible
from edgegate.models.blocks.gate import Gate
from edgegate.models.blocks.gc import GatedCompression
from edgegate.models.blocks.gdn import GatedDeltaNetMixer
from edgegate.models.blocks.gla import GLAMixer
from edgegate.models.blocks.hgrn import HGRNMixer
from edgegate.models.blocks.scans import DeltaRuleScan, GLAScan, LinearScan
from edgegate.models.blocks.se import SqueezeExcite
from edgegate.models.blocks.transformer import AttentionBlock, MixerBlock

SCAN_MODULES: tuple[type, ...] = (LinearScan, GLAScan, DeltaRuleScan)

__all__ = [
    "ATTENTION_VARIANTS",
    "MLP",
    "SCAN_MODULES",
    "Attention",
    "AttentionBlock",
    "ClippedSoftmax",
    "ConvBNAct",
    "DeltaRuleScan",
    "GLAMixer",
    "GLAScan",
    "Gate",
    "GatedCompression",
    "GatedDeltaNetMixer",
    "HGRNMixer",
    "HeadwiseGate",
    "LinearScan",
    "MixerBlock",
    "SqueezeExcite",
    "default_gamma",
    "make_divisible",
]
