#!/usr/bin/env bash
# Check that a LeukEdge .tflite gives the same outputs on aarch64 as on x86-64, under
# qemu-user emulation (Debian arm64 root made with debootstrap). CORRECTNESS ONLY: timings
# under emulation mean nothing and are never reported as device timings.
#
# Usage (as root, from the repo root, with the project's venv active):
#   benchmarks/qemu_aarch64.sh --setup-only                 # build the arm64 root (slow, once)
#   benchmarks/qemu_aarch64.sh MODEL.tflite IMAGE...        # compare outputs x86 vs aarch64
#   e.g. benchmarks/qemu_aarch64.sh models/densenet201-binary/densenet201-binary.int8.tflite \
#            ../shared/data/aria-all/Pro/*.jpg
#
# Environment:
#   LEUKEDGE_ARM64_ROOT  arm64 root folder (default /tmp/leukedge-arm64; never inside the repo)
#   LEUKEDGE_QEMU_WORK   scratch folder for inputs/outputs (default /tmp/leukedge-qemu-work)
#   LEUKEDGE_QEMU_CPU    emulated CPU (default cortex-a72 = Raspberry Pi 4; cortex-a76 = Pi 5;
#                        `max` enables SVE/SME/i8mm that no Pi has)
#   LEUKEDGE_QEMU_STEPS  int8 outputs: max difference allowed in quantization steps (default 2)
#   LEUKEDGE_QEMU_TOL    float outputs (a float32 file): max abs difference allowed (default 1e-4)
#   LEUKEDGE_QEMU_CAM_TOL  the float heatmap `cam`: max abs difference (default 2e-3; measured
#                        up to 5e-4 on emulated cores); its correlation must also be >= 0.99
#   Derived outputs (`probability`, recomputed by the runtime from `logit`) must move no more
#   than their logit allows. All of it: leukedge.benchmarks.crossarch (tested without qemu).
#   PYTHON               host Python with leukedge installed (default: python)
#
# What it does:
#   1. apt-get install qemu-user-static debootstrap; register qemu-aarch64 with binfmt_misc.
#   2. debootstrap --arch=arm64 a minimal Debian bookworm root with python3 + venv, then
#      pip install ai-edge-litert numpy opencv-python-headless and this repo's core package
#      (aarch64 wheels from PyPI) into /opt/venv inside it.
#   3. Replace /proc/cpuinfo inside the root with a plain aarch64 cpuinfo file (LiteRT
#      segfaults at interpreter creation under qemu when it reads the host's x86 cpuinfo).
#   4. Preprocess the images on x86 with the model's spec (leukedge.preprocess), save .npy,
#      run the model with leukedge.runtime.LiteRunner on x86 and inside the arm64 root, and
#      compare every output with its kind's tolerance (python -m leukedge.benchmarks.crossarch):
#      prints a JSON report (max abs difference, int8 steps, heatmap correlation), exit 1
#      when an output differs more than allowed. The repo's sources are re-installed in the
#      root when they changed since the last run.
set -euo pipefail

ROOT=${LEUKEDGE_ARM64_ROOT:-/tmp/leukedge-arm64}
WORK=${LEUKEDGE_QEMU_WORK:-/tmp/leukedge-qemu-work}
TOL=${LEUKEDGE_QEMU_TOL:-0.0001}
CAM_TOL=${LEUKEDGE_QEMU_CAM_TOL:-0.002}
STEPS=${LEUKEDGE_QEMU_STEPS:-2}
QEMU_CPU_MODEL=${LEUKEDGE_QEMU_CPU:-cortex-a72}
PY=${PYTHON:-python}
REPO=$(pwd)
MIRROR=${LEUKEDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() { echo "qemu_aarch64: error: $*" >&2; exit 2; }
log() { echo "qemu_aarch64: $*" >&2; }

[[ $(id -u) == 0 ]] || die "run as root (apt-get, debootstrap and chroot need it)"
[[ -f pyproject.toml && -d core ]] || die "run from the LeukEdge repo root"
case "$ROOT" in "$REPO"*) die "LEUKEDGE_ARM64_ROOT must be outside the repo";; esac

setup_host() {
  if ! command -v debootstrap >/dev/null || [[ ! -x /usr/bin/qemu-aarch64-static ]]; then
    log "installing qemu-user-static debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
  fi
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    # Debian's own registration line; the F flag keeps the interpreter open so it works in a chroot.
    local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [[ -f $conf ]] || die "$conf missing (qemu-user-static not installed?)"
    log "registering qemu-aarch64 with binfmt_misc"
    grep -v '^#' "$conf" | head -1 > /proc/sys/fs/binfmt_misc/register
  fi
}

# Run a command inside the arm64 root with a clean environment (no host pip settings).
in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/host-ca.crt SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 OPENBLAS_NUM_THREADS=1 QEMU_CPU="$QEMU_CPU_MODEL" "$@"
}

# A fingerprint of the sources installed in the root: re-installed when it changes.
source_stamp() { cat pyproject.toml core/*.py benchmarks/*.py | sha256sum | cut -d' ' -f1; }

install_leukedge() {
  rm -rf "$ROOT/opt/leukedge-src" && mkdir -p "$ROOT/opt/leukedge-src"
  cp -r pyproject.toml README.md core train compress edge_app benchmarks "$ROOT/opt/leukedge-src/"
  in_root /opt/venv/bin/pip install -q "$@" /opt/leukedge-src
  source_stamp > "$ROOT/.leukedge-ready"
}

setup_root() {
  if [[ -f $ROOT/.leukedge-ready ]]; then
    if [[ $(cat "$ROOT/.leukedge-ready") != $(source_stamp) ]]; then
      log "sources changed: re-installing LeukEdge in the arm64 root"
      mountpoint -q "$ROOT/proc" && umount "$ROOT/proc"
      mount -t proc proc "$ROOT/proc"
      install_leukedge --no-deps --no-build-isolation --force-reinstall
      umount "$ROOT/proc"
    fi
    log "arm64 root ready at $ROOT"
    return
  fi
  if [[ ! -x $ROOT/usr/bin/python3 ]]; then
    log "debootstrap arm64 bookworm into $ROOT (several minutes)"
    rm -rf "$ROOT"
    debootstrap --arch=arm64 --variant=minbase \
      --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  fi
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # The host's CA bundle (it may hold a TLS-inspecting proxy's CA that pip must trust).
  cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/ssl/certs/host-ca.crt"
  mountpoint -q "$ROOT/proc" && umount "$ROOT/proc"
  mount -t proc proc "$ROOT/proc"   # pip needs a real /proc; replaced by the fake cpuinfo below
  trap 'mountpoint -q "$ROOT/proc" && umount "$ROOT/proc"' EXIT
  log "creating /opt/venv in the arm64 root and installing aarch64 wheels from PyPI"
  in_root /usr/bin/python3 -m venv /opt/venv
  in_root /opt/venv/bin/pip install -q --index-url https://pypi.org/simple \
    "ai-edge-litert==2.3.0" numpy "opencv-python-headless<5" "setuptools>=64"
  install_leukedge --index-url https://pypi.org/simple
  umount "$ROOT/proc"
  trap - EXIT
  log "arm64 root ready"
}

fake_cpuinfo() {
  mountpoint -q "$ROOT/proc" && umount "$ROOT/proc"
  mkdir -p "$ROOT/proc"
  # A Cortex-A72 (Raspberry Pi 4) style cpuinfo; only read for feature detection.
  : > "$ROOT/proc/cpuinfo"
  for cpu in 0 1; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$cpu" >> "$ROOT/proc/cpuinfo"
  done
  # cpuinfo (XNNPACK) also reads the CPU lists from sysfs, which the chroot does not mount.
  mountpoint -q "$ROOT/sys" || { mkdir -p "$ROOT/sys/devices/system/cpu"
    echo 0-1 > "$ROOT/sys/devices/system/cpu/possible"; echo 0-1 > "$ROOT/sys/devices/system/cpu/present"; }
}

compare() {
  local model=$1; shift
  [[ -f $model ]] || die "$model: no such model file"
  (( $# > 0 )) || die "name at least one image"
  rm -rf "$WORK/inputs" && mkdir -p "$WORK/inputs"
  log "preprocessing $# image(s) on x86 with the model's spec"
  "$PY" -m leukedge.benchmarks.crossarch prepare "$model" "$WORK/inputs" "$@"
  log "running on x86-64"
  "$PY" -m leukedge.benchmarks.crossarch run "$model" "$WORK/inputs" "$WORK/x86_64.npz"
  mkdir -p "$ROOT/work" && rm -rf "$ROOT/work/"*
  cp "$model" "$ROOT/work/model.tflite"
  cp -r "$WORK/inputs" "$ROOT/work/inputs"
  fake_cpuinfo
  log "running on aarch64 ($QEMU_CPU_MODEL) under qemu (slow; not a timing)"
  in_root /opt/venv/bin/python -m leukedge.benchmarks.crossarch run /work/model.tflite /work/inputs /work/aarch64.npz
  cp "$ROOT/work/aarch64.npz" "$WORK/aarch64.npz"
  log "comparing (model $model, emulated CPU $QEMU_CPU_MODEL)"
  "$PY" -m leukedge.benchmarks.crossarch compare "$WORK/x86_64.npz" "$WORK/aarch64.npz" --json "$WORK/result.json" \
    --int8-steps "$STEPS" --float-abs "$TOL" --heatmap-abs "$CAM_TOL"
}

mkdir -p "$WORK"
setup_host
setup_root
if [[ ${1:-} == --setup-only ]]; then
  exit 0
fi
(( $# >= 1 )) || die "usage: $0 --setup-only | MODEL.tflite IMAGE..."
compare "$@"
