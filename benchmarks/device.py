"""Facts about the machine a benchmark ran on (no TensorFlow import: versions come from metadata)."""
from __future__ import annotations

import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path

#: SIMD features worth knowing for int8/float inference (x86 ``flags`` and Arm ``Features``).
ISA_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_int8", "amx_bf16",
    "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "fphp",
)

#: Distributions whose versions are recorded (name in the JSON -> PyPI distribution).
RUNTIME_DISTS = {
    "ai-edge-litert": "ai-edge-litert",
    "tflite-runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
    "tf-keras": "tf-keras",
    "numpy": "numpy",
    "opencv": "opencv-python-headless",
}


def _cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """First value of each key in /proc/cpuinfo (empty dict when unreadable)."""
    out: dict[str, str] = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out.setdefault(k.strip().lower(), v.strip())
    return out


def _board_model() -> str | None:
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            text = Path(p).read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
            if text:
                return text
        except OSError:
            continue
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def proc_kib(path: str, key: str) -> int | None:
    """The KiB value of ``key`` in a /proc status-style file (``MemTotal:``, ``VmHWM:``), or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _memory_mb() -> float | None:
    kib = proc_kib("/proc/meminfo", "MemTotal:")
    return None if kib is None else round(kib / 1024, 1)


def available_cores() -> int:
    """Cores this process may run on (CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _slug(text: str, words: int) -> str:
    text = re.sub(r"\((r|tm|c)\)", " ", text.lower())
    text = re.sub(r"\b(processor|cpu|core|\d+-core|with|radeon.*|@.*)\b", " ", text)
    tokens = re.findall(r"[a-z0-9]+", text)
    return "-".join(tokens[:words]) or "unknown"


#: Int8 dot-product instructions (flag -> id tag): the same CPU name ("AMD EPYC" in a VM) comes
#: with and without them, and int8 latency differs about 2x between the two.
DOT_PRODUCT_TAGS = (("avx512_vnni", "vnni"), ("avx_vnni", "vnni"), ("asimddp", "dotprod"))


def device_id(arch: str, cpu_model: str, cores: int, board: str | None = None, flags=()) -> str:
    """A short, file-name-safe id: ``x86_64-amd-epyc-2c``, ``x86_64-amd-epyc-vnni-2c`` (int8
    dot-product instructions among ``flags``), ``aarch64-raspberry-pi-5-dotprod-4c``."""
    name = _slug(board, 3) if board else _slug(cpu_model, 2)
    tag = next((t for f, t in DOT_PRODUCT_TAGS if f in set(flags)), None)
    return f"{arch.lower()}-{name}-{tag}-{cores}c" if tag else f"{arch.lower()}-{name}-{cores}c"


def device_facts() -> dict:
    """The ``device`` object of the benchmark JSON (see :mod:`leukedge.benchmarks.schema`)."""
    info = _cpuinfo()
    board = _board_model()
    arch = platform.machine() or "unknown"
    cpu = (info.get("model name") or info.get("hardware") or info.get("model") or board
           or platform.processor() or "unknown")
    if cpu == "unknown" and info.get("cpu part"):  # Arm cores without a model name
        cpu = f"Arm part {info['cpu part']}"
    raw_flags = set((info.get("flags") or info.get("features") or "").split())
    flags = [f for f in ISA_FLAGS if f in raw_flags]
    if arch in ("aarch64", "arm64") and "asimd" in raw_flags and "neon" not in flags:
        flags.insert(0, "neon")  # Advanced SIMD is NEON
    cores = available_cores()
    return {
        "id": device_id(arch, cpu, cores, board, raw_flags),
        "arch": arch,
        "cpu_model": cpu,
        "cores_logical": os.cpu_count() or cores,
        "cores_available": cores,
        "isa_flags": flags,
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_total_mb": _memory_mb(),
        "board": board,
        "runtimes": {k: dist_version(d) for k, d in RUNTIME_DISTS.items()},
    }


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        vals = [int(v) for v in fields]
    except (OSError, ValueError, IndexError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return total - idle, total


class OthersCPU:
    """How much of the machine other processes used between :meth:`start` and :meth:`stop`.

    Machine busy time (/proc/stat) minus this process's own CPU time (os.times), in percent of
    all cores: 0 on a quiet machine, ~50 when another process keeps one of two cores busy.
    """

    def start(self) -> "OthersCPU":
        self._j = cpu_jiffies()
        t = os.times()
        self._self = t.user + t.system
        self._wall = _monotonic()
        return self

    def stop(self) -> float | None:
        j = cpu_jiffies()
        if self._j is None or j is None:
            return None
        t = os.times()
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        busy_s = (j[0] - self._j[0]) / hz
        total_s = (j[1] - self._j[1]) / hz
        own_s = t.user + t.system - self._self
        if total_s <= 0:
            return None
        return round(max(0.0, (busy_s - own_s) / total_s * 100.0), 1)


def _monotonic() -> float:
    return time.perf_counter()
