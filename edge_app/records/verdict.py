"""One verdict per sample from its fields of view: the documented rule (docs/sample-verdict.md).

A field is *usable* when the model scored it (quality ok, not out-of-distribution, image
readable), or when the photo was too bright or blurred but the release referred it for a strong
score (``Screening.rule_in``: such a field is always positive, never a negative). With ``K = VerdictRule.min_usable`` (default 2, validated on the test split):

- ``refer``: any usable field is positive (a single positive field refers the sample);
- ``no_signs``: at least K usable fields and all of them negative;
- ``retake``: fewer than K usable fields and the sample is still open (take another field);
- ``cannot_assess``: fewer than K usable fields once the sample is finished, or after
  ``max_attempts`` attempts: the smear needs a person (laboratory review).

Voided fields do not count. Pure functions: no database, no widgets.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from leukedge.errors import ConfigError

#: Field statuses: scored ones are usable.
POSITIVE, NEGATIVE, RETAKE, OOD, UNREADABLE = "positive", "negative", "retake", "ood", "unreadable"
FIELD_STATUSES = (POSITIVE, NEGATIVE, RETAKE, OOD, UNREADABLE)
USABLE = (POSITIVE, NEGATIVE)

#: Sample verdicts.
REFER, NO_SIGNS, TAKE_MORE, CANNOT_ASSESS = "refer", "no_signs", "retake", "cannot_assess"
VERDICTS = (REFER, NO_SIGNS, TAKE_MORE, CANNOT_ASSESS)


@dataclass(frozen=True)
class VerdictRule:
    """The sample rule's parameters.

    Args:
        min_usable: K, usable fields needed before a sample can be called negative.
        max_attempts: attempts (fields, usable or not) after which an open sample with
            fewer than K usable fields is ``cannot_assess`` instead of ``retake``.
        aggregate: ``any`` (refer if any usable field is positive: the validated rule) or
            ``majority`` (refer if more than half are: kept for the comparison only).
    """

    min_usable: int = 2
    max_attempts: int = 6
    aggregate: str = "any"

    def __post_init__(self):
        if not isinstance(self.min_usable, int) or self.min_usable < 1:
            raise ConfigError(f"min_usable must be an integer >= 1, got {self.min_usable!r}")
        if not isinstance(self.max_attempts, int) or self.max_attempts < self.min_usable:
            raise ConfigError(f"max_attempts must be an integer >= min_usable ({self.min_usable}), "
                              f"got {self.max_attempts!r}")
        if self.aggregate not in ("any", "majority"):
            raise ConfigError(f"aggregate must be 'any' or 'majority', got {self.aggregate!r}")

    def describe(self) -> str:
        agg = "any usable field is positive" if self.aggregate == "any" else "most usable fields are positive"
        return (f"refer if {agg}; no signs found with at least {self.min_usable} usable fields, all negative; "
                f"otherwise retake (up to {self.max_attempts} attempts), then cannot assess")


@dataclass(frozen=True)
class Verdict:
    """A sample's verdict and the counts it came from."""

    code: str
    n_fields: int
    n_usable: int
    n_positive: int
    rule: VerdictRule

    @property
    def n_negative(self) -> int:
        return self.n_usable - self.n_positive

    @property
    def final(self) -> bool:
        """True when more fields cannot change it (refer, no signs, cannot assess)."""
        return self.code != TAKE_MORE

    def to_dict(self) -> dict:
        return {"verdict": self.code, "n_fields": self.n_fields, "n_usable": self.n_usable,
                "n_positive": self.n_positive, "min_usable": self.rule.min_usable,
                "max_attempts": self.rule.max_attempts, "aggregate": self.rule.aggregate}


def field_status(screening) -> str:
    """The status of one attempt from a :class:`~leukedge.edge_app.inference.Screening`."""
    if getattr(screening, "error", None):
        return UNREADABLE
    d = getattr(screening, "decision", None)
    if d in (POSITIVE, NEGATIVE):
        return d
    if d == "retake":
        return RETAKE
    if d == "out-of-distribution" or getattr(screening, "ood", False):
        return OOD
    return UNREADABLE


def sample_verdict(statuses: Iterable[str], rule: VerdictRule | None = None, finished: bool = False) -> Verdict:
    """The verdict of a sample whose (non-voided) fields have ``statuses``."""
    rule = rule or VerdictRule()
    statuses = list(statuses)
    bad = [s for s in statuses if s not in FIELD_STATUSES]
    if bad:
        raise ConfigError(f"unknown field status {bad[0]!r}", f"use one of {', '.join(FIELD_STATUSES)}")
    usable = [s for s in statuses if s in USABLE]
    n_pos = sum(s == POSITIVE for s in usable)
    if rule.aggregate == "any":
        refer = n_pos > 0
    else:
        refer = len(usable) >= rule.min_usable and n_pos * 2 > len(usable)
    if refer:
        code = REFER
    elif len(usable) >= rule.min_usable:
        code = NO_SIGNS
    elif finished or len(statuses) >= rule.max_attempts:
        code = CANNOT_ASSESS
    else:
        code = TAKE_MORE
    return Verdict(code, len(statuses), len(usable), n_pos, rule)
