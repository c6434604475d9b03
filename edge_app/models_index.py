"""The models index (``models/index.json``): which releases exist and which one is recommended.

The app and ``leukedge predict`` open the recommended release when no ``--model`` is given
(not the first folder by name). The index says why that release was chosen (validated
metrics), so the choice can be checked and changed in one place.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from leukedge.errors import ModelError

from .release_info import list_releases

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"


def read_index(models_root: str | os.PathLike = "models") -> dict:
    """The index of ``models_root`` (``{}`` when there is none).

    Raises:
        ModelError: the file exists but is not a JSON object.
    """
    path = Path(models_root) / INDEX_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a valid models index ({exc})", "fix or delete the file") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a valid models index (expected a JSON object)", "fix or delete the file")
    return data


def recommended_release(models_root: str | os.PathLike = "models") -> Path | None:
    """The release folder to open by default.

    The index's ``recommended`` release when it is present; else the only release when there
    is exactly one; else None (the caller asks for ``--model``) -- never an arbitrary first one.

    Raises:
        ModelError: the index names a release that is not in ``models_root``.
    """
    root = Path(models_root)
    releases = list_releases(root)
    name = read_index(root).get("recommended")
    if isinstance(name, str) and name:
        folder = root / name
        if folder not in releases:
            raise ModelError(f"{root / INDEX_NAME}: the recommended release '{name}' is not in {root}/",
                             "pass --model models/<name>, or fix the index")
        return folder
    if len(releases) == 1:
        return releases[0]
    return None


def resolve_model(model: str | os.PathLike | None, models_root: str | os.PathLike = "models") -> Path:
    """``model`` when given, else the recommended release of ``models_root``.

    Raises:
        ModelError: no model given and none can be chosen.
    """
    if model:
        return Path(model)
    folder = recommended_release(models_root)
    if folder is None:
        found = ", ".join(p.name for p in list_releases(models_root)) or "none"
        raise ModelError(f"no --model given and no recommended release in {Path(models_root) / INDEX_NAME} "
                         f"(releases found: {found})", "pass --model models/<name>")
    log.info("using the recommended release %s", folder)
    return folder
