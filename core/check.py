"""`leukedge data check`: what is in a data folder, and what is wrong with it."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from .data import class_counts, scan_folder
from .errors import DataError
from .hashing import exact_duplicates, hash_records, near_duplicate_pairs

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    data_dir: str
    counts: dict[str, int]
    sizes: dict[str, int]
    unreadable: list[dict] = field(default_factory=list)
    exact_duplicates: list[list[str]] = field(default_factory=list)
    near_duplicates: list[dict] = field(default_factory=list)
    near_duplicate_summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"data_dir": self.data_dir, "n": sum(self.counts.values()), "counts": self.counts,
                "sizes": self.sizes, "unreadable": self.unreadable, "exact_duplicates": self.exact_duplicates,
                "near_duplicates": self.near_duplicates, "near_duplicate_summary": self.near_duplicate_summary}

    def to_text(self) -> str:
        lines = [f"data folder: {self.data_dir}", f"images: {sum(self.counts.values())}"]
        lines += [f"  {c:<12} {n:>6}" for c, n in self.counts.items()]
        lines.append("image sizes: " + ", ".join(f"{s} x{n}" for s, n in list(self.sizes.items())[:6]))
        lines.append(f"unreadable: {len(self.unreadable)}")
        lines += [f"  {u['path']}: {u['reason']}" for u in self.unreadable[:20]]
        n_exact = sum(len(g) - 1 for g in self.exact_duplicates)
        lines.append(f"exact duplicates: {len(self.exact_duplicates)} groups ({n_exact} extra copies)")
        s = self.near_duplicate_summary
        lines.append(f"near duplicates (phash distance <= {s.get('max_distance')}): {s.get('pairs', 0)} pairs, "
                     f"{s.get('within_class', 0)} within a class, {s.get('across_classes', 0)} across classes, "
                     f"{s.get('adjacent_numbers', 0)} at file numbers <= {s.get('adjacent_window')} apart")
        return "\n".join(lines)


def check_folder(data_dir, max_distance: int = 10, adjacent_window: int = 25) -> CheckReport:
    """Scan, decode and hash every image of ``data_dir``.

    Unreadable files (undecodable, too large, broken links, FIFOs, devices, folders with an
    image name) are reported (path + reason) and skipped, never a crash.

    Raises:
        DataError: the folder is missing, empty, or a class has no (readable) image.
    """
    records, skipped = scan_folder(data_dir)
    hashed = hash_records(records, desc="check: reading")
    unreadable = list(skipped) + [{"path": h.record.relpath, "reason": h.error} for h in hashed if h.error]
    readable_per_class = Counter(h.record.cls for h in hashed if not h.error)
    empty = [c for c in class_counts(records) if readable_per_class[c] == 0]
    sizes = Counter(f"{h.size[0]}x{h.size[1]}" for h in hashed if h.size)
    pairs = near_duplicate_pairs(hashed, max_distance)
    near = []
    within = across = adjacent = 0
    for i, j, d in pairs:
        a, b = hashed[i].record, hashed[j].record
        same = a.cls == b.cls
        within += same
        across += not same
        adj = same and a.number is not None and b.number is not None and abs(a.number - b.number) <= adjacent_window
        adjacent += adj
        near.append({"a": a.relpath, "b": b.relpath, "distance": d, "exact": hashed[i].sha256 == hashed[j].sha256})
    report = CheckReport(str(data_dir), class_counts(records), dict(sizes.most_common()), unreadable,
                         exact_duplicates(hashed), near,
                         {"pairs": len(pairs), "max_distance": max_distance, "within_class": within,
                          "across_classes": across, "adjacent_numbers": adjacent, "adjacent_window": adjacent_window})
    if empty:
        raise DataError(f"{data_dir}: class(es) {empty} have no readable image",
                        "fix or remove the unreadable files listed by `leukedge data check`")
    return report
