"""What the app asks of the operating system: runtime permissions and sharing a file.

On Android (python-for-android) permissions go through ``android.permissions`` (p4a's
module) and sharing through an ``Intent.ACTION_SEND`` chooser built with pyjnius, the file
handed over as a ``content://`` URI from ``androidx.core.content.FileProvider`` (declared
by the p4a bootstrap as ``<package>.fileprovider``). Elsewhere every permission is granted
and sharing returns False (the caller shows where the file was written).
"""
from __future__ import annotations

import logging
import mimetypes
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def on_android() -> bool:
    """True inside a python-for-android build."""
    return "ANDROID_ARGUMENT" in os.environ or "ANDROID_PRIVATE" in os.environ

#: Permission names (``android.permission.<NAME>``) each feature needs.
CAMERA = ("CAMERA",)
STORAGE = ("READ_EXTERNAL_STORAGE", "READ_MEDIA_IMAGES")


def request_permissions(names: tuple[str, ...], callback: Callable[[bool], None]) -> None:
    """Ask for ``names`` at run time; ``callback(granted)`` once the user answered.

    ``granted`` is True when at least the first permission was granted (the later ones are
    alternatives across Android versions, e.g. storage before/after Android 13).
    """
    if not on_android():
        callback(True)
        return
    from android.permissions import Permission, check_permission, request_permissions as ask  # p4a only

    perms = [getattr(Permission, n) for n in names if hasattr(Permission, n)]
    if perms and all(check_permission(p) for p in perms[:1]):
        callback(True)
        return

    def answered(permissions, results):
        granted = dict(zip(permissions, results))
        callback(any(granted.get(p) for p in perms))

    ask(perms, answered)


def share_intent(path: str | os.PathLike, title: str, autoclass=None, activity=None, authority: str | None = None):
    """Build (and start) an Android share chooser for ``path``; returns the chooser ``Intent``.

    ``autoclass`` and ``activity`` default to pyjnius' ``autoclass`` and p4a's
    ``PythonActivity.mActivity``; tests pass a JVM with stand-in classes.
    """
    from jnius import cast

    if autoclass is None:
        from jnius import autoclass
    Intent = autoclass("android.content.Intent")
    File = autoclass("java.io.File")
    FileProvider = autoclass("androidx.core.content.FileProvider")
    if activity is None:
        activity = autoclass("org.kivy.android.PythonActivity").mActivity
    authority = authority or f"{activity.getPackageName()}.fileprovider"
    uri = FileProvider.getUriForFile(activity, authority, File(str(Path(path).resolve())))
    send = Intent(Intent.ACTION_SEND)
    send.setType(mimetypes.guess_type(str(path))[0] or "application/octet-stream")
    # putExtra is overloaded: without the cast pyjnius picks putExtra(String, String) and fails
    send.putExtra(Intent.EXTRA_STREAM, cast("android.os.Parcelable", uri))
    send.addFlags(Intent.FLAG_GRANT_READ_URI_PERMISSION)
    chooser = Intent.createChooser(send, cast("java.lang.CharSequence", autoclass("java.lang.String")(title)))
    activity.startActivity(chooser)
    return chooser


def share_file(path: str | os.PathLike, title: str) -> bool:
    """Offer ``path`` to other apps (Android share sheet); False where there is none."""
    if not on_android():
        return False
    try:
        share_intent(path, title)
        return True
    except Exception:  # the share sheet is a convenience: the file is written either way
        log.exception("sharing %s failed", path)
        return False
