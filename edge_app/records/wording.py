"""Safe wording for a sample's verdict: what it means and what to do next.

Pure functions used by the app's screens and by the reports (PDF, FHIR, CSV), so the
words a health worker reads on screen and in a referral are the same. Rules kept here:

- every verdict says what to do next;
- a negative (``no_signs``) always says it does not rule leukemia out;
- sensitivity and specificity are given in words with their 95% CIs from the model card;
- a score hidden by the quality or out-of-distribution gate is never shown (:func:`score_text`).

Every sentence is an English template marked with ``N_`` (so the app's gettext catalogue
extracts it); pass ``tr`` (the app's ``_``) to get it translated, the reports use English.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from collections.abc import Callable

from .verdict import CANNOT_ASSESS, NO_SIGNS, OOD, REFER, RETAKE, TAKE_MORE, UNREADABLE, USABLE, Verdict


def N_(message: str) -> str:
    """Mark a template for the app's translation catalogue (no import of the app's i18n here)."""
    return message


def _same(message: str) -> str:
    return message


HEADLINES = {
    REFER: N_("Refer: signs of leukemia in this sample"),
    NO_SIGNS: N_("No signs of leukemia found"),
    TAKE_MORE: N_("Retake: not enough usable fields yet"),
    CANNOT_ASSESS: N_("Cannot assess this sample"),
}
#: Short verdict words for lists (History rows).
LABELS = {REFER: N_("Refer"), NO_SIGNS: N_("No signs found"), TAKE_MORE: N_("Retake"),
          CANNOT_ASSESS: N_("Cannot assess")}

NOT_RULED_OUT = N_("A negative screen does not rule leukemia out: if the patient has symptoms (tiredness, "
                   "fever, bruising or bleeding, repeated infections), refer anyway.")
NOT_A_DIAGNOSIS = N_("This is a screening aid, not a diagnosis.")

#: RGBA colours per verdict (screen headline, report banner).
COLOURS = {REFER: (0.78, 0.16, 0.16, 1), NO_SIGNS: (0.13, 0.55, 0.25, 1), TAKE_MORE: (0.85, 0.5, 0.05, 1),
           CANNOT_ASSESS: (0.4, 0.4, 0.4, 1)}

FIELD_WORDS = {"positive": N_("signs of leukemia"), "negative": N_("no signs found"),
               RETAKE: N_("image quality too low: no result"), OOD: N_("unlike the smears the model knows: no result"),
               UNREADABLE: N_("image could not be read: no result")}
#: A retake whose photo passed the quality gate: the score was in the release's grey zone
#: (``preprocess.capture.rule_out`` up to the threshold; Screening.borderline).
BORDERLINE_WORDS = N_("borderline score: no result, another field needed")


def result_words(status: str, quality: str | None = None) -> str:
    """The words for a field's status (untranslated); a retake of a photo of good quality is a
    borderline score, not a quality problem."""
    if status == RETAKE and quality == "ok":
        return BORDERLINE_WORDS
    return FIELD_WORDS.get(status, N_("no result"))


@dataclass(frozen=True)
class VerdictText:
    """What the screen and the reports say about one sample."""

    code: str
    headline: str
    meaning: str
    next_step: str
    caveat: str
    performance: str
    colour: tuple

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [t for t in (self.headline, self.meaning, self.next_step, self.caveat, self.performance) if t]


def pct(v) -> str:
    v = 100 * float(v)
    return f"{v:.1f}%" if 0 < v < 10 or 99 < v < 100 else f"{v:.0f}%"


def _metric(card: dict | None, name: str) -> tuple[float | None, list | None]:
    ev = (card or {}).get("evaluation") or {}
    m = (ev.get("metrics") if isinstance(ev, dict) else None) or (card or {}).get("metrics") or {}
    v = m.get(name) if isinstance(m, dict) else None
    if isinstance(v, dict):
        ci = v.get("ci95")
        ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)
        v = v.get("value")
        return (float(v), list(ci) if ok else None) if isinstance(v, (int, float)) else (None, None)
    return (float(v), None) if isinstance(v, (int, float)) and not isinstance(v, bool) else (None, None)


def performance_sentence(card: dict | None, tr: Callable[[str], str] = _same) -> str:
    """Sensitivity and specificity in words with their 95% CIs, from the card's test evaluation."""
    sens, sens_ci = _metric(card, "recall")
    spec, spec_ci = _metric(card, "specificity")
    if sens is None or spec is None:
        return tr(N_("This model's sensitivity and specificity are not in its model card: treat every result "
                     "with care."))
    ev = (card or {}).get("evaluation") or {}
    n = ev.get("n") if isinstance(ev, dict) else None
    where = tr(N_("{n} test images")).format(n=n) if isinstance(n, int) else tr(N_("its test images"))

    def ci(c):
        return (" " + tr(N_("(95% CI {lo} to {hi})")).format(lo=pct(c[0]), hi=pct(c[1])) if c
                else " " + tr(N_("(no confidence interval in the card)")))

    return tr(N_("On {where} this model found {sens} of leukemia images{sens_ci} and correctly cleared {spec} "
                 "of non-leukemia images{spec_ci}. These are per-image figures from one hospital's smears; "
                 "results on other slides may be worse.")).format(
        where=where, sens=pct(sens), sens_ci=ci(sens_ci), spec=pct(spec), spec_ci=ci(spec_ci))


def verdict_text(verdict: Verdict, card: dict | None = None, tr: Callable[[str], str] = _same) -> VerdictText:
    """The texts for ``verdict`` (with the model card's performance); ``tr`` translates (default: English)."""
    v, k = verdict, verdict.rule.min_usable
    if v.code == REFER:
        meaning = tr(N_("{pos} of {usable} usable fields of view show signs of leukemia (one is enough to refer).")
                     ).format(pos=v.n_positive, usable=v.n_usable)
        nxt = tr(N_("Refer the patient to a haematologist or the clinic's doctor today, with this report and the "
                    "slide, for a blood film review and a confirming test."))
        caveat = tr(NOT_A_DIAGNOSIS) + " " + tr(N_("The model can be wrong: only a laboratory confirms leukemia."))
    elif v.code == NO_SIGNS:
        meaning = tr(N_("None of the {usable} usable fields of view shows signs of leukemia.")).format(usable=v.n_usable)
        nxt = tr(N_("No referral is needed because of this screen. Keep the usual follow-up of the patient."))
        caveat = tr(NOT_RULED_OUT) + " " + tr(NOT_A_DIAGNOSIS)
    elif v.code == TAKE_MORE:
        meaning = (tr(N_("1 usable field of view so far; {k} are needed before the sample can be called negative."))
                   if v.n_usable == 1 else
                   tr(N_("{usable} usable fields of view so far; {k} are needed before the sample can be called "
                         "negative."))).format(usable=v.n_usable, k=k)
        nxt = tr(N_("Move the slide to another area of the smear (thin, evenly spread, cells not overlapping), "
                    "focus, and take another field of view."))
        caveat = tr(N_("No result yet: do not tell the patient anything from this screen."))
    elif v.code == CANNOT_ASSESS:
        meaning = tr(N_("Only {usable} of {n} attempts could be used ({k} usable fields are needed): the photos were "
                        "too poor or unlike the smears the model knows.")).format(usable=v.n_usable, n=v.n_fields, k=k)
        nxt = tr(N_("Send the slide for review by a laboratory or a trained microscopist. If the patient is unwell, "
                    "refer without waiting."))
        caveat = tr(N_("This is not a negative result: leukemia has not been ruled out."))
    else:
        raise ValueError(f"unknown verdict {v.code!r}")
    return VerdictText(v.code, tr(HEADLINES[v.code]), meaning, nxt, caveat, performance_sentence(card, tr),
                       COLOURS[v.code])


def shown_probability(status: str, probability) -> float | None:
    """The probability that may be stored, shown or exported for a field: None unless it was scored."""
    if status not in USABLE or probability is None:
        return None
    return float(probability)


def score_text(status: str, probability, tr: Callable[[str], str] = _same, quality: str | None = None) -> str:
    """``signs of leukemia (model score 0.93)`` for a scored field; the reason there is no score
    otherwise (``quality``, the field's quality status, tells a borderline score from a bad photo)."""
    p = shown_probability(status, probability)
    if p is None:
        return tr(result_words(status, quality))
    return tr(N_("{words} (model score {p})")).format(words=tr(FIELD_WORDS[status]), p=f"{p:.2f}")
