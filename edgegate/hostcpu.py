"""Which integer dot-product instructions this machine's CPU has, as an INT8 deployment ISA.

ONNX Runtime's u8 x s8 kernels differ by instruction set. Without VNNI, x86 kernels add pairs
of u8*s8 products in a saturating int16 (``pmaddubsw``), so full-range s8 weights overflow;
AVX-512 VNNI / AVX-VNNI and ARM's sdot/udot accumulate in int32 and never do. Quantization
profiles name the *deployment* ISA; this module only answers "what is this host", for the
plain ``onnxruntime`` profile and for warnings when a model meets a host it was not made for.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

ARM64, X86_VNNI, X86_AVX2 = "arm64", "x86-vnni", "x86-avx2"
ISAS: tuple[str, ...] = (ARM64, X86_VNNI, X86_AVX2)
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def isa_from(machine: str, cpuinfo: str) -> str:
    """The deployment ISA of a machine from ``platform.machine()`` and /proc/cpuinfo text.

    An x86 CPU whose flags are unknown counts as AVX2: its 7-bit weights are exact on every
    x86 CPU, whereas full-range weights are exact only where VNNI is present.
    """
    machine = machine.lower()
    if machine in ("arm64", "aarch64") or machine.startswith("armv8"):
        return ARM64
    return X86_VNNI if _cpu_flags(cpuinfo) & _VNNI_FLAGS else X86_AVX2


@functools.cache
def host_isa() -> str:
    """This machine's INT8 ISA: ``arm64``, ``x86-vnni`` or ``x86-avx2``."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # macOS and others: no flags to read
        cpuinfo = ""
    return isa_from(platform.machine(), cpuinfo)
