"""Exact (sha256) and near (perceptual hash) duplicate detection."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from .data import Record
from .errors import ImageError
from .imageio import decode_image, read_image_bytes
from .progress import progress

log = logging.getLogger(__name__)


@dataclass
class HashedRecord:
    record: Record
    sha256: str | None  # None when the file could not be read at all
    phash: int | None  # 64-bit perceptual hash, None when unreadable
    size: tuple[int, int] | None  # (width, height)
    error: str | None = None


def phash64(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash (imagehash.phash) of an RGB uint8 image."""
    import imagehash
    from PIL import Image

    h = imagehash.phash(Image.fromarray(rgb))
    return int(str(h), 16)


def hash_records(records: list[Record], desc: str = "hashing") -> list[HashedRecord]:
    """sha256 + perceptual hash + size of every record; unreadable images keep their error.

    Each file is read once (bounded, regular files only: see :func:`leukedge.imageio.read_image_bytes`).
    """
    out = []
    for r in progress(records, desc=desc, unit="img"):
        sha = None
        try:
            data = read_image_bytes(r.path)
            sha = hashlib.sha256(data).hexdigest()
            img = decode_image(data, r.path)
            out.append(HashedRecord(r, sha, phash64(img), (img.shape[1], img.shape[0])))
        except ImageError as exc:
            out.append(HashedRecord(r, sha, None, None, exc.one_line()))
    return out


def exact_duplicates(hashed: list[HashedRecord]) -> list[list[str]]:
    """Groups (of 2+) of relpaths with identical bytes."""
    by: dict[str, list[str]] = {}
    for h in hashed:
        if h.sha256 is None:
            continue
        by.setdefault(h.sha256, []).append(h.record.relpath)
    return [sorted(v) for v in by.values() if len(v) > 1]


def near_duplicate_pairs(hashed: list[HashedRecord], max_distance: int = 6) -> list[tuple[int, int, int]]:
    """Index pairs (i, j, hamming distance) whose perceptual hashes differ in <= max_distance bits.

    Exact duplicates are included (distance 0). O(n^2) on 64-bit ints, vectorised: fine
    for tens of thousands of images.
    """
    idx = [i for i, h in enumerate(hashed) if h.phash is not None]
    if len(idx) < 2:
        return []
    hashes = np.array([hashed[i].phash for i in idx], dtype=np.uint64)
    pairs = []
    for a in range(len(idx) - 1):
        x = np.bitwise_xor(hashes[a + 1:], hashes[a])
        dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        for b in np.nonzero(dist <= max_distance)[0]:
            pairs.append((idx[a], idx[a + 1 + int(b)], int(dist[b])))
    return pairs
