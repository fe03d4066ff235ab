"""trtexec command lines for TensorRT 10.x and 11.x, and the kit's build.sh that runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from edgegate.errors import BadInput
from edgegate.exporters.tensorrt import ShapeRange, build_command, golden_command, timing_command
from edgegate.exporters.tensorrt.kit import KitPart, render_build_script, shape_ranges

RANGES = [ShapeRange("tokens", (1, 1), (1, 16), (8, 16))]
CUDA_ARCH_SH = Path(__file__).resolve().parents[3] / "csrc" / "tensorrt" / "cuda_arch.sh"
PRECISION_FLAGS = {"--fp16", "--int8", "--best", "--calib", "--bf16", "--fp8"}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_11_commands_carry_no_precision_flags(precision):
    command = build_command(11, "m.onnx", "m.engine", "lib.so", RANGES, precision)
    assert not PRECISION_FLAGS & {word.split("=")[0] for word in command}
    assert "--dynamicPlugins=lib.so" in command


@pytest.mark.parametrize(
    "precision, flag", [("fp32", None), ("fp16", "--fp16"), ("int8", "--int8")]
)
def test_tensorrt_10_commands_ask_for_the_precision(precision, flag):
    command = build_command(10, "m.onnx", "m.engine", "lib.so", RANGES, precision)
    flags = PRECISION_FLAGS & set(command)
    assert flags == ({flag} if flag else set())


def test_shapes_and_run_options():
    command = build_command(10, "m.onnx", "m.engine", "lib.so", RANGES, "fp32")
    assert "--minShapes=tokens:1x1" in command and "--maxShapes=tokens:8x16" in command
    golden = golden_command(11, "m.engine", "lib.so", [("tokens", "g/t.bin", (1, 16))], "o.json")
    assert "--loadInputs=tokens:g/t.bin" in golden and "--exportOutput=o.json" in golden
    assert "--shapes=tokens:1x16" in golden
    timing = timing_command(10, "m.engine", "lib.so", [("tokens", (1, 16))], "t.json")
    assert "--percentile=50,90,99" in timing and "--exportTimes=t.json" in timing


def test_unknown_major_and_precision_are_bad_input():
    with pytest.raises(BadInput, match="9.x"):
        build_command(9, "m.onnx", "m.engine", "lib.so", RANGES, "fp32")
    with pytest.raises(BadInput, match="bf16"):
        build_command(10, "m.onnx", "m.engine", "lib.so", RANGES, "bf16")


def test_shape_ranges_vary_batch_and_token_length_only():
    images, tokens = torch.zeros(1, 3, 32, 32), torch.zeros(1, 16, dtype=torch.int64)
    r_img, r_tok = shape_ranges(["images", "tokens"], (images, tokens), [(0, 2, 3), (0, 1)], 8)
    assert (r_img.min, r_img.opt, r_img.max) == ((1, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))
    assert (r_tok.min, r_tok.opt, r_tok.max) == ((1, 1), (1, 16), (8, 16))


@pytest.fixture
def kit(tmp_path) -> Path:
    """A build.sh for two parts, with fake TensorRT headers of each major beside it."""
    part = KitPart("model", "model.onnx", torch.nn.Identity(), (torch.zeros(1, 16),),
                   ["tokens"], ["logits"], RANGES)  # fmt: skip
    stage = KitPart("stage1", "stage1.onnx", torch.nn.Identity(), (torch.zeros(1, 16),),
                    ["tokens"], ["gate"], RANGES)  # fmt: skip
    (tmp_path / "build.sh").write_text(render_build_script("toy", "fp16", [part, stage]))
    (tmp_path / "plugin").mkdir()
    shutil.copyfile(CUDA_ARCH_SH, tmp_path / "plugin" / "cuda_arch.sh")
    for major in (10, 11):
        headers = tmp_path / f"trt{major}"
        headers.mkdir()
        macro = "NV_TENSORRT_MAJOR" if major == 10 else "TRT_MAJOR_ENTERPRISE"
        (headers / "NvInferVersion.h").write_text(f"#define {macro} {major} //!< major\n")
    return tmp_path


def test_build_script_is_valid_bash(kit):
    bash = shutil.which("bash")
    assert bash, "bash is needed to check build.sh"
    subprocess.run([bash, "-n", str(kit / "build.sh")], check=True)


def _dry_run(kit: Path, major: int, **extra: str) -> list[str]:
    env = {**os.environ, "EDGEGATE_DRY_RUN": "1", "TENSORRT_INCLUDE_DIR": str(kit / f"trt{major}"),
           **extra}  # fmt: skip
    env.pop("TRT_MAJOR", None)
    proc = subprocess.run(["bash", str(kit / "build.sh")], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert f"TensorRT {major}.x" in proc.stdout
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("major", [10, 11])
def test_build_script_runs_the_commands_of_the_version_it_finds(kit, major):
    commands = _dry_run(kit, major)
    engines = [c for c in commands if "--saveEngine=" in c]
    assert [c.split("--saveEngine=")[1].split()[0] for c in engines] == [
        "model.engine",
        "stage1.engine",
    ]
    assert sum("--loadInputs=" in c for c in commands) == 2
    assert sum("--exportTimes=" in c for c in commands) == 2
    assert any(c.startswith("cmake -S plugin") for c in commands)
    has_fp16 = all("--fp16" in c for c in engines)
    assert has_fp16 if major == 10 else not any("--fp16" in c for c in commands)


def test_build_script_refuses_an_unsupported_version(kit):
    env = {**os.environ, "EDGEGATE_DRY_RUN": "1", "TENSORRT_INCLUDE_DIR": str(kit / "trt10"),
           "TRT_MAJOR": "8"}  # fmt: skip
    proc = subprocess.run(["bash", str(kit / "build.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines()[-1].startswith("FAIL:")


def test_build_script_builds_the_plugin_for_the_gpu_nvidia_smi_reports(kit):
    """The architecture comes from plugin/cuda_arch.sh (tested in tests/csrc/test_cuda_arch.py),
    here through a fake nvidia-smi first on PATH."""
    fake = kit / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 8.7\n")
    fake.chmod(0o755)
    path = f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {"PATH": path, "EDGEGATE_TEGRA_RELEASE": str(kit / "none")}
    commands = _dry_run(kit, 10, **env)
    cmake = [c for c in commands if c.startswith("cmake -S plugin")]
    assert cmake and "-DCMAKE_CUDA_ARCHITECTURES=87" in cmake[0], commands


def test_build_script_fails_without_cuda_arch_sh(kit):
    (kit / "plugin" / "cuda_arch.sh").unlink()
    env = {**os.environ, "EDGEGATE_DRY_RUN": "1", "TENSORRT_INCLUDE_DIR": str(kit / "trt10")}
    proc = subprocess.run(["bash", str(kit / "build.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "cuda_arch.sh is missing" in proc.stdout
