#!/usr/bin/env bash
# Check that a LeukEdge .tflite gives the same outputs on aarch64 as on x86-64, under
# qemu-user emulation (Debian arm64 root made with debootstrap). CORRECTNESS ONLY: timings
# under emulation mean nothing and are never reported as device timings.
#
# Usage (as root, from the repo root, with the project's venv active):
#   benchmarks/qemu_aarch64.sh --setup-only                 # build the arm64 root (slow, once)
#   benchmarks/qemu_aarch64.sh MODEL.tflite IMAGE...        # compare outputs x86 vs aarch64
#
# Environment:
#   LEUKEDGE_ARM64_ROOT  arm64 root folder (default /tmp/leukedge-arm64; never inside the repo)
#   LEUKEDGE_QEMU_WORK   scratch folder for inputs/outputs (default /tmp/leukedge-qemu-work)
#   LEUKEDGE_QEMU_CPU    emulated CPU (default cortex-a72 = Raspberry Pi 4; cortex-a76 = Pi 5;
#                        `max` enables SVE/SME/i8mm that no Pi has)
#   LEUKEDGE_QEMU_STEPS  int8 outputs: max difference allowed in quantization steps (default 2)
#   LEUKEDGE_QEMU_TOL    float outputs: max abs difference allowed (default 1e-4)
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
#      compare every named output: prints the max abs difference (and in int8 quantization
#      steps), exit 1 above tolerance.
set -euo pipefail

ROOT=${LEUKEDGE_ARM64_ROOT:-/tmp/leukedge-arm64}
WORK=${LEUKEDGE_QEMU_WORK:-/tmp/leukedge-qemu-work}
TOL=${LEUKEDGE_QEMU_TOL:-0.0001}
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

setup_root() {
  if [[ -f $ROOT/.leukedge-ready ]]; then
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
  rm -rf "$ROOT/opt/leukedge-src" && mkdir -p "$ROOT/opt/leukedge-src"
  cp -r pyproject.toml README.md core train compress edge_app benchmarks "$ROOT/opt/leukedge-src/"
  in_root /opt/venv/bin/pip install -q --index-url https://pypi.org/simple \
    "ai-edge-litert==2.3.0" numpy "opencv-python-headless<5" /opt/leukedge-src
  umount "$ROOT/proc"
  trap - EXIT
  touch "$ROOT/.leukedge-ready"
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

RUNNER_PY='
import sys, numpy as np
from pathlib import Path
from leukedge.runtime import LiteRunner
model, ind, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
r = LiteRunner(model, num_threads=1)
res = {}
for f in sorted(ind.glob("*.npy")):
    for k, v in r.run(np.load(f)).items():
        res[f"{f.stem}/{k}"] = v
for k, d in r.outputs.items():
    res[f"_step/{k}"] = np.float64(d["quantization"][0] if d["dtype"] != np.float32 else 0.0)
np.savez(out, **res)
import platform; print(platform.machine(), len(res), "arrays")
'

compare() {
  local model=$1; shift
  [[ -f $model ]] || die "$model: no such model file"
  (( $# > 0 )) || die "name at least one image"
  rm -rf "$WORK/inputs" && mkdir -p "$WORK/inputs"
  log "preprocessing $# image(s) on x86 with the model's spec"
  "$PY" - "$model" "$WORK/inputs" "$@" <<'EOF'
import sys, numpy as np
from pathlib import Path
from leukedge.preprocess import PreprocessConfig, preprocess_file
from leukedge.runtime import LiteRunner
from leukedge.spec import ModelSpec
model, out = Path(sys.argv[1]), Path(sys.argv[2])
spec_file = model.parent / "spec.json"
if spec_file.exists():
    cfg = ModelSpec.load(spec_file).preprocess
else:
    cfg = PreprocessConfig(input_size=LiteRunner(model).input_shape[1])
for i, p in enumerate(sys.argv[3:]):
    np.save(out / f"img{i:03d}.npy", preprocess_file(p, cfg))
EOF
  log "running on x86-64"
  "$PY" -c "$RUNNER_PY" "$model" "$WORK/inputs" "$WORK/x86_64.npz"
  mkdir -p "$ROOT/work" && rm -rf "$ROOT/work/"*
  cp "$model" "$ROOT/work/model.tflite"
  cp -r "$WORK/inputs" "$ROOT/work/inputs"
  fake_cpuinfo
  log "running on aarch64 under qemu (slow; not a timing)"
  in_root /opt/venv/bin/python -c "$RUNNER_PY" /work/model.tflite /work/inputs /work/aarch64.npz
  cp "$ROOT/work/aarch64.npz" "$WORK/aarch64.npz"
  "$PY" - "$WORK/x86_64.npz" "$WORK/aarch64.npz" "$TOL" "$model" "$STEPS" "$QEMU_CPU_MODEL" <<'EOF'
import json, sys, numpy as np
a, b, tol, steps = np.load(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3]), float(sys.argv[5])
if sorted(a.files) != sorted(b.files):
    sys.exit(f"outputs differ in names: {sorted(a.files)} vs {sorted(b.files)}")
per, per_steps, frac = {}, {}, {}
for k in a.files:
    img, name = k.split("/", 1)
    if img == "_step":
        continue
    d = np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))
    per[name] = max(per.get(name, 0.0), float(d.max()) if d.size else 0.0)
    step = float(a[f"_step/{name}"])
    if step > 0:
        per_steps[name] = max(per_steps.get(name, 0.0), round(float(d.max()) / step, 2))
    frac[name] = max(frac.get(name, 0.0), round(float((d > 0).mean()), 4))
ok = all(per_steps[n] <= steps if n in per_steps else per[n] <= tol for n in per)
res = {"model": sys.argv[4], "qemu_cpu": sys.argv[6], "images": len({k.split("/")[0] for k in a.files} - {"_step"}),
       "max_abs_diff": per, "max_diff_quant_steps": per_steps, "fraction_of_values_differing": frac,
       "tolerance": {"int8_steps": steps, "float_abs": tol}, "pass": ok}
print(json.dumps(res, indent=2))
open(sys.argv[1].rsplit("/", 1)[0] + "/result.json", "w").write(json.dumps(res, indent=2) + "\n")
sys.exit(0 if res["pass"] else 1)
EOF
}

mkdir -p "$WORK"
setup_host
setup_root
if [[ ${1:-} == --setup-only ]]; then
  exit 0
fi
(( $# >= 1 )) || die "usage: $0 --setup-only | MODEL.tflite IMAGE..."
compare "$@"
