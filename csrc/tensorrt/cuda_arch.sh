# edgegate: which CUDA architecture to build the TensorRT plugin for, as CMake wants it ("87").
# Sourced by the kit's build.sh and run by `edgegate export --build`:
#   . cuda_arch.sh && CUDA_ARCHS=$(cuda_arch) || exit 1
# cuda_arch prints the architectures, or one line on stderr saying why none was found and
# returns 1. In order: $CUDA_ARCHS when set (checked: "87", "87;90"; "native" from CMake
# 3.24); nvidia-smi's compute_cap of the first GPU (checked to be a number like 8.7); a Jetson
# (Tegra, whose nvidia-smi may lack compute_cap) is Orin, 87; "native" only with CMake 3.24 or
# newer (JetPack 6's Ubuntu 22.04 ships CMake 3.22, which does not know it).
# Tests point the Tegra probes elsewhere: EDGEGATE_TEGRA_RELEASE, EDGEGATE_DT_COMPATIBLE.

# CMake's list of architectures: "87", "87;90", "90a", "87-real".
cuda_arch_valid() {
  local one='[1-9][0-9]*[af]?(-real|-virtual)?'
  [[ "$1" =~ ^$one(\;$one)*$ ]]
}

# A Jetson: L4T's release file, the device tree's "nvidia,tegra...", or an L4T kernel.
cuda_arch_is_tegra() {
  local release=${EDGEGATE_TEGRA_RELEASE:-/etc/nv_tegra_release}
  local compatible=${EDGEGATE_DT_COMPATIBLE:-/proc/device-tree/compatible}
  [ -f "$release" ] && return 0
  [ -r "$compatible" ] && tr '\0' '\n' <"$compatible" | grep -q '^nvidia,tegra' && return 0
  uname -r 2>/dev/null | grep -qi tegra
}

# CMake's version is at least $1 (e.g. 3.24).
cuda_arch_cmake_at_least() {
  local have
  have=$(cmake --version 2>/dev/null | head -1 | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -1)
  [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$1" "$have" | sort -V | head -1)" = "$1" ]
}

cuda_arch() {
  if [ "${CUDA_ARCHS:-}" = native ]; then
    if cuda_arch_cmake_at_least 3.24; then echo native; return 0; fi
    echo "CUDA_ARCHS=native needs CMake 3.24 or newer: give the number, e.g. 87 for Orin" >&2
    return 1
  fi
  if [ -n "${CUDA_ARCHS:-}" ]; then
    if cuda_arch_valid "$CUDA_ARCHS"; then echo "$CUDA_ARCHS"; return 0; fi
    echo "CUDA_ARCHS='$CUDA_ARCHS' is not a CUDA architecture list such as 87 or 87;90" >&2
    return 1
  fi
  local cap=""
  if command -v nvidia-smi >/dev/null 2>&1; then
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 \
      | tr -d '[:space:]')
    if [[ "$cap" =~ ^[1-9][0-9]*\.[0-9]$ ]]; then echo "${cap/./}"; return 0; fi
  fi
  if cuda_arch_is_tegra; then echo 87; return 0; fi  # JetPack 6 runs on Orin only
  if cuda_arch_cmake_at_least 3.24; then echo native; return 0; fi
  echo "no CUDA architecture found (nvidia-smi's compute_cap: '${cap:-none}'; not a Jetson;" \
    "CMake older than 3.24 has no 'native'): set CUDA_ARCHS, e.g. 87 for Orin, 90 for Hopper" >&2
  return 1
}
