"""Entry point for Android (buildozer / python-for-android) and for running from a source tree.

python-for-android packages the source folders, not the installed ``leukedge`` package, so
this maps ``core/`` to ``leukedge`` and ``edge_app/`` to ``leukedge.edge_app`` when the
package is not installed, then starts the screening app. On a desktop or a Raspberry Pi use
``leukedge app`` instead (after ``pip install 'leukedge[app]'``).
"""
import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads (ENVIRONMENT.md)
HERE = Path(__file__).resolve().parent


def _map_package(name: str, folder: Path) -> None:
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if "." in name:
        parent, child = name.rsplit(".", 1)
        setattr(sys.modules[parent], child, module)


def main() -> None:
    try:
        import leukedge.edge_app  # noqa: F401  (installed package)
    except ImportError:
        _map_package("leukedge", HERE / "core")
        _map_package("leukedge.edge_app", HERE / "edge_app")
    from leukedge.edge_app.android import on_android
    from leukedge.edge_app.app import run_app

    private = Path(os.environ.get("ANDROID_PRIVATE", HERE))
    run_app(models_root=str(HERE / "models"),
            db=str(private / "history.sqlite3") if on_android() else None,
            camera="kivy:0" if on_android() else None,
            fullscreen=on_android(),
            start_dir="/sdcard/DCIM" if on_android() else None)


if __name__ == "__main__":
    main()
