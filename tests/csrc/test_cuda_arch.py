"""cuda_arch.sh: the CUDA architecture build.sh and --build compile the plugin for.

Each case runs the shell function in a PATH of its own: a fake nvidia-smi, uname or cmake
where the case needs one, and the few coreutils the function uses; the Tegra probes point at
files in the test's folder.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "csrc" / "tensorrt" / "cuda_arch.sh"
TOOLS = ("tr", "grep", "head", "sort")


@pytest.fixture
def machine(tmp_path):
    """Run cuda_arch on a made-up machine: ``tools`` maps a command to its shell body."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed by cuda_arch.sh"
        (bin_dir / tool).symlink_to(found)

    def run(tools: dict[str, str] | None = None, **env: str) -> subprocess.CompletedProcess:
        for name, body in (tools or {}).items():
            fake = bin_dir / name
            fake.write_text(f"#!{bash}\n{body}\n")
            fake.chmod(0o755)
        environ = {"PATH": str(bin_dir), "EDGEGATE_TEGRA_RELEASE": str(tmp_path / "no-release"),
                   "EDGEGATE_DT_COMPATIBLE": str(tmp_path / "no-compatible"), **env}  # fmt: skip
        return subprocess.run([bash, "-c", f". {SCRIPT} && cuda_arch"], env=environ,
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    return run


def smi(output: str, code: int = 0) -> dict[str, str]:
    return {"nvidia-smi": f"printf '%s' '{output}'; exit {code}"}


@pytest.mark.parametrize(("cap", "arch"), [("8.7", "87"), ("9.0\\n9.0", "90"), ("12.0", "120")])
def test_compute_cap_of_the_first_gpu(machine, cap, arch):
    done = machine({"nvidia-smi": f"printf '{cap}\\n'"})
    assert (done.returncode, done.stdout.strip()) == (0, arch), done.stderr


@pytest.mark.parametrize("output", ["[N/A]", "8.7; rm -rf /", "87", "", 'Field "compute_cap"'])
def test_a_compute_cap_that_is_no_number_is_not_used(machine, output):
    done = machine({**smi(output), "cmake": "echo 'cmake version 3.22.1'"})
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert "set CUDA_ARCHS" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_jetson_by_its_release_file_is_orin(machine, tmp_path):
    (tmp_path / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    done = machine(smi("[N/A]"), EDGEGATE_TEGRA_RELEASE=str(tmp_path / "nv_tegra_release"))
    assert (done.returncode, done.stdout.strip()) == (0, "87"), done.stderr


def test_jetson_by_its_device_tree_is_orin(machine, tmp_path):
    compatible = tmp_path / "compatible"
    compatible.write_bytes(b"nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0")
    done = machine(smi("Field is not valid", 2), EDGEGATE_DT_COMPATIBLE=str(compatible))
    assert (done.returncode, done.stdout.strip()) == (0, "87"), done.stderr


def test_jetson_by_its_kernel_is_orin(machine):
    done = machine({"uname": "echo 5.15.148-tegra"})
    assert (done.returncode, done.stdout.strip()) == (0, "87"), done.stderr


def test_no_gpu_found_with_cmake_322_is_one_clear_error(machine):
    done = machine({"uname": "echo 6.1.0-amd64", "cmake": "echo 'cmake version 3.22.1'"})
    assert done.returncode == 1 and done.stdout == ""
    assert "no CUDA architecture found" in done.stderr and "87 for Orin" in done.stderr


def test_native_only_from_cmake_324(machine):
    done = machine({"uname": "echo 6.1.0-amd64", "cmake": "echo 'cmake version 3.28.3'"})
    assert (done.returncode, done.stdout.strip()) == (0, "native"), done.stderr
    asked = machine({"cmake": "echo 'cmake version 3.22.1'"}, CUDA_ARCHS="native")
    assert asked.returncode == 1 and "needs CMake 3.24" in asked.stderr


@pytest.mark.parametrize("archs", ["87", "87;90", "90a", "87-real"])
def test_given_archs_are_used_over_the_gpu(machine, archs):
    done = machine(smi("9.0"), CUDA_ARCHS=archs)
    assert (done.returncode, done.stdout.strip()) == (0, archs), done.stderr


@pytest.mark.parametrize("archs", ["8.7", "sm_87", "87;", "87 90"])
def test_given_archs_that_cmake_would_misread_are_refused(machine, archs):
    done = machine(smi("8.7"), CUDA_ARCHS=archs)
    assert done.returncode == 1 and done.stdout == "" and "CUDA_ARCHS=" in done.stderr
