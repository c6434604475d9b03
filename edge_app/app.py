"""Start the Kivy app: Kivy's settings before the window exists, then :class:`~.gui.LeukEdgeApp`.

Screens (``edge_app/screens/``, one module each, layout in ``kv/<screen>.kv``): ``capture``
(sample ID, choose a file or use the camera), ``result`` (verdict and what to do next, the
score when it may be shown, heatmap with legend and opacity), ``history`` and ``detail``,
``model`` (the card), ``settings`` behind ``pin``, ``guide`` (how to photograph). Events go
to :class:`~.controller.Controller`; model work runs on a worker thread.
Start it with ``leukedge app [--model models/<name>]`` or :func:`run_app`.
"""
from __future__ import annotations

import os
import sys

WINDOW_SIZE = (480, 800)


def configure_kivy(fullscreen: bool = False, size=WINDOW_SIZE) -> None:
    """Kivy settings that must be set before Kivy is imported / the window exists."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")        # our argparse owns the command line
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # log through `logging` (the CLI's format), once
    if sys.platform.startswith("linux") and "ANDROID_ARGUMENT" not in os.environ:
        os.environ.setdefault("KIVY_CLIPBOARD", "sdl2")  # not xclip/xsel, which are rarely installed
    from kivy.config import Config

    if fullscreen:
        Config.set("graphics", "fullscreen", "auto")
        Config.set("graphics", "show_cursor", "0")
    else:
        Config.set("graphics", "width", str(size[0]))
        Config.set("graphics", "height", str(size[1]))
    Config.set("kivy", "exit_on_escape", "0")
    # No multisample anti-aliasing: the screens are text, images and axis-aligned boxes, and with a
    # software renderer (Mesa llvmpipe) 2x MSAA made every frame about three times the CPU work.
    Config.set("graphics", "multisamples", "0")
    Config.set("input", "mouse", "mouse,disable_multitouch")


def app_class():
    """The :class:`~.gui.LeukEdgeApp` class. Kivy is imported here, after :func:`configure_kivy`
    has set its environment (importing Kivy earlier would freeze its settings)."""
    from .gui import LeukEdgeApp

    return LeukEdgeApp


def run_app(model=None, db=None, models_root="models", fullscreen=False, threads=None, camera=None,
            start_dir=None, allow_unsigned=False) -> int:
    """Configure Kivy, build and run the app until the window closes."""
    configure_kivy(fullscreen)
    app_class()(model=model, db=db, models_root=models_root, threads=threads, camera=camera,
                start_dir=start_dir, allow_unsigned=allow_unsigned).run()
    return 0
