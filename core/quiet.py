"""Hide TensorFlow's native log noise (absl / XLA / CUDA probes) from a user's console.

TensorFlow's C++ side writes straight to file descriptor 2 ("failed call to cuInit", "oneDNN
custom operations are on", "All log messages before absl::InitializeLog() ..."), so neither
``logging`` nor ``TF_CPP_MIN_LOG_LEVEL`` hides all of it: some lines are printed before the
level is read. :func:`native_noise_filtered` puts a pipe on fd 2 and forwards every line except
those, so Python's own messages and progress bars still reach the terminal.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import warnings

#: Lines of the C++ runtime's log format (``I0000 00:00:1796.5 24471 port.cc:153] ...``), absl's
#: preamble, and two lines the TFLite converter and LiteRT print straight to fd 2.
NOISE = re.compile(rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] |"
                   rb"WARNING: All log messages before absl::InitializeLog\(\) is called|"
                   rb"fully_quantize: \d+, inference_type: |"          # the TFLite quantizer's printf
                   rb"INFO: Created TensorFlow Lite XNNPACK delegate)")  # LiteRT's, once per interpreter


def quiet_environment() -> None:
    """Before TensorFlow is imported: its C++ logs at FATAL only, its Python warnings off."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    for module in ("tensorflow", "tf_keras", "keras", "absl"):
        warnings.filterwarnings("ignore", module=module)


def _pump(read_fd: int, write_fd: int) -> None:
    """Forward ``read_fd`` to ``write_fd`` chunk by chunk, dropping noise lines (``\\r`` progress
    updates pass through as they come)."""
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        out = [ln + b"\n" for ln in lines if not NOISE.match(ln.lstrip(b"\r"))]
        if b"\r" in pending and not NOISE.match(pending.lstrip(b"\r")):
            out.append(pending)  # a progress bar redrawn in place: show it now
            pending = b""
        if out:
            os.write(write_fd, b"".join(out))
    if pending and not NOISE.match(pending):
        os.write(write_fd, pending)


@contextlib.contextmanager
def native_noise_filtered(enabled: bool = True):
    """Within the block, lines of TensorFlow's native log format never reach stderr."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, saved), name="stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees EOF
        pump.join(timeout=5)
        os.close(read_fd)
        os.close(saved)
