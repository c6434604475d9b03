"""The app's Android services (edge_app/platform.py) as far as they can be checked without a device.

* Share sheet: the pyjnius calls of :func:`share_intent` against compiled Java stand-ins of
  ``Intent``, ``Uri``, ``FileProvider`` and ``Activity`` with the real constants and
  ``putExtra`` overloads: the chooser wraps an ``ACTION_SEND`` intent with the file's
  ``content://`` URI, its MIME type and the read-permission flag, and is started.
* Runtime permissions: :func:`request_permissions` against a stand-in of python-for-android's
  ``android.permissions`` module (same names and call shape), granted and refused.

Not verified here (needs a device or an emulator): the real FileProvider configuration of the
p4a bootstrap, the system permission dialog, Kivy's Android camera provider.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

STANDIN = Path("tests/java_standin_android")


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    if shutil.which("javac") is None:
        pytest.skip("needs a JDK (javac)")
    pytest.importorskip("jnius", reason="pyjnius is in the test extra")
    out = tmp_path_factory.mktemp("android-classes")
    srcs = sorted(str(p) for p in STANDIN.rglob("*.java"))
    r = subprocess.run(["javac", "-d", str(out), *srcs], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


SHARE = textwrap.dedent("""
    import json, sys
    import jnius_config
    jnius_config.add_classpath(sys.argv[1])
    from jnius import autoclass
    from leukedge.edge_app.platform import share_intent
    activity = autoclass("android.app.Activity")()
    chooser = share_intent(sys.argv[2], "Share the screening history", autoclass=autoclass, activity=activity)
    Intent = autoclass("android.content.Intent")
    send = chooser.getExtra(Intent.EXTRA_INTENT)
    print(json.dumps({"started": activity.started is not None and activity.started.getAction(),
                      "chooser": chooser.getAction(), "title": str(chooser.getExtra(Intent.EXTRA_TITLE)),
                      "send": send.getAction(), "type": send.getType(), "flags": send.getFlags(),
                      "stream": send.getExtra(Intent.EXTRA_STREAM).toString()}))
""")


def test_share_sheet_intent_through_pyjnius(classes, tmp_path):
    export = tmp_path / "leukedge-history-20261206-101500.csv"
    export.write_text("id,time_utc\n")
    r = subprocess.run([sys.executable, "-c", SHARE, str(classes), str(export)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["started"] == out["chooser"] == "android.intent.action.CHOOSER"
    assert out["send"] == "android.intent.action.SEND" and out["type"] == "text/csv"
    assert out["flags"] & 1                                   # FLAG_GRANT_READ_URI_PERMISSION
    assert out["stream"] == f"content://org.leukedge.leukedge.fileprovider/files/{export.name}"
    assert out["title"] == "Share the screening history"


PERMS = textwrap.dedent("""
    import json, sys, types
    answers = json.loads(sys.argv[1])
    mod = types.ModuleType("android.permissions")          # stand-in of p4a's android.permissions
    class Permission:
        CAMERA = "android.permission.CAMERA"
        READ_EXTERNAL_STORAGE = "android.permission.READ_EXTERNAL_STORAGE"
        READ_MEDIA_IMAGES = "android.permission.READ_MEDIA_IMAGES"
    asked = []
    mod.Permission = Permission
    mod.check_permission = lambda p: False
    def request_permissions(perms, callback):
        asked.append(list(perms))
        callback(list(perms), [answers.get(p.rsplit(".", 1)[1], False) for p in perms])
    mod.request_permissions = request_permissions
    sys.modules["android"] = types.ModuleType("android")
    sys.modules["android.permissions"] = mod
    from leukedge.edge_app import platform
    got = []
    platform.request_permissions(platform.CAMERA, got.append)
    platform.request_permissions(platform.STORAGE, got.append)
    print(json.dumps({"asked": asked, "granted": got}))
""")


@pytest.mark.parametrize("answers,granted", [({"CAMERA": True, "READ_MEDIA_IMAGES": True}, [True, True]),
                                             ({"CAMERA": False, "READ_EXTERNAL_STORAGE": False}, [False, False])])
def test_runtime_permissions_are_asked_on_android(answers, granted):
    env = {**os.environ, "ANDROID_ARGUMENT": "/data/app"}
    r = subprocess.run([sys.executable, "-c", PERMS, json.dumps(answers)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["asked"] == [["android.permission.CAMERA"],
                            ["android.permission.READ_EXTERNAL_STORAGE", "android.permission.READ_MEDIA_IMAGES"]]
    assert out["granted"] == granted


def test_off_android_everything_is_granted_and_nothing_is_shared(tmp_path, monkeypatch):
    from leukedge.edge_app import platform

    monkeypatch.delenv("ANDROID_ARGUMENT", raising=False)
    monkeypatch.delenv("ANDROID_PRIVATE", raising=False)
    got = []
    platform.request_permissions(platform.CAMERA, got.append)
    assert got == [True] and platform.share_file(tmp_path / "x.csv", "t") is False
