"""`leukedge evaluate` (one model) and `leukedge evaluate compare` (the comparison table)."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="metrics with 95%% CIs, calibration, figures, Grad-CAM and the shortcut audit",
        description="Evaluate a model on the test split of its manifest (or with --all on every image of a folder "
                    "of class subfolders): accuracy, precision, recall, specificity, F1, ROC-AUC with bootstrap "
                    "95% CIs, confusion matrix, calibration, operating points; optional report with figures. "
                    "`leukedge evaluate compare RUN...` builds the comparison table of several runs.")
    p.add_argument("--model", help="release folder models/<name>, a .tflite file (spec.json beside it) or a run folder")
    p.add_argument("--data", default=None, help="data folder (default: $LEUKEDGE_DATA or ../shared/data/aria-all)")
    p.add_argument("--all", action="store_true", help="score every image of every class folder in --data (new data)")
    p.add_argument("--split", default=None, help="split manifest CSV (default: split.csv of the run/release folder)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write the result JSON here")
    p.add_argument("--report", default=None, metavar="DIR", help="write Markdown/HTML pages and figures here")
    p.add_argument("--mask-corners", type=float, default=0.15, metavar="F",
                   help="shortcut audit: also score with the four corners masked, F = fraction of the side "
                        "(default 0.15, where the scale-bar stamps are; 0 turns the audit off)")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the spec's)")
    p.add_argument("--gradcam", type=int, default=4, metavar="N",
                   help="Grad-CAM gallery: N images per group TP/FP/FN/TN (0: none; default 4)")
    p.add_argument("--no-heatmap-quality", dest="heatmap_quality", action="store_false",
                   help="skip the heatmap localisation measure (lift on the stained cells, pointing game, "
                        "genericity; on by default when the model has a 'cam' output, about 20 ms per image)")
    p.add_argument("--faithfulness", type=int, default=0, metavar="N",
                   help="also run deletion/insertion curves on N leukemia-positive images (about 88 model calls "
                        "per image; default 0 = off)")
    p.add_argument("--variant", default=None, help="release file variant: int8 (default), float32, pruned-int8")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="development only: run a release whose signature is missing, wrong or untrusted (results say \"unsigned\")")
    p.set_defaults(func=cmd_evaluate, _parser=p)
    esub = p.add_subparsers(dest="evaluate_command", metavar="ACTION")
    c = esub.add_parser("compare", help="comparison table + one ROC plot of several runs (from predictions.csv)")
    c.add_argument("runs", nargs="+", help="run folders (or predictions.csv files)")
    c.add_argument("--out", default="reports/compare", help="output folder (default reports/compare)")
    c.add_argument("--split", default="test", help="split of predictions.csv to compare on (default test)")
    c.add_argument("--n-boot", type=int, default=1000)
    c.set_defaults(func=cmd_compare)


def _check_threshold(t):
    from .errors import ConfigError

    if t is not None and not 0.0 <= t <= 1.0:
        raise ConfigError(f"--threshold must be within [0, 1], got {t}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import resolve_data_dir
    from .errors import ConfigError
    from .evaluate import run_evaluation
    from .fileio import check_output_dir, check_output_path
    from .report import fmt_ci

    if not args.model:
        raise ConfigError("--model is required", "pass models/<name>, a .tflite file or a run folder")
    _check_threshold(args.threshold)
    if not 0.0 <= args.mask_corners < 0.5:
        raise ConfigError(f"--mask-corners must be in [0, 0.5), got {args.mask_corners}")
    if args.n_boot < 100:
        raise ConfigError(f"--n-boot {args.n_boot} is too few for a 95% interval", "use at least 100 (default 1000)")
    if args.faithfulness < 0:
        raise ConfigError(f"--faithfulness must be >= 0, got {args.faithfulness}")
    if args.json_out:
        check_output_path(args.json_out, "--json output")
    if args.report:
        check_output_dir(args.report, "--report folder")
    res = run_evaluation(args.model, resolve_data_dir(args.data), split_csv=args.split, use_all=args.all,
                         json_out=args.json_out, report_dir=args.report, mask_corners=args.mask_corners,
                         threshold=args.threshold, gradcam=args.gradcam, variant=args.variant, n_boot=args.n_boot,
                         seed=args.seed, allow_unsigned=args.allow_unsigned,
                         heatmap_quality=args.heatmap_quality, faithfulness=args.faithfulness)
    m = res["metrics"]
    print(f"{res['model']['name']} on {res['n']} images ({res['data']['mode']}), threshold {res['threshold']:.4f}")
    sig = res["model"].get("signature")
    if sig != "verified":
        what = "UNSIGNED release (--allow-unsigned)" if sig == "unsigned" else "not a signed release: model UNVERIFIED"
        print(f"  signature: {what}")
    for k in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc"):
        line = f"  {k:<12} {fmt_ci(m[k])}"
        if "shortcut_audit" in res:
            a = res["shortcut_audit"]
            line += f"   corners masked: {fmt_ci(a['metrics'][k])} (change {a['delta'][k]['delta']:+.4f})"
        print(line)
    if "subtype" in res:
        print(f"  subtype accuracy {fmt_ci(res['subtype']['accuracy'])}, macro F1 {fmt_ci(res['subtype']['macro_f1'])}")
    hq = res.get("heatmap_quality")
    if hq:
        pos = hq["leukemia_positive"] if hq["leukemia_positive"].get("lift") else hq["all"]
        line = (f"  heatmap: lift {fmt_ci(pos['lift'], 2)}, pointing {fmt_ci(pos['pointing'], 2)} "
                f"(chance {pos['pointing_chance']['value']:.2f}), correlation with the average map "
                f"{pos['generic_r']['value']:.2f}")
        if "deletion_vs_random" in pos:
            line += (f"; deletion AUC - random {fmt_ci(pos['deletion_vs_random'], 3)}, "
                     f"insertion AUC - random {fmt_ci(pos['insertion_vs_random'], 3)}")
        if "class_deletion_vs_random" in pos:
            line += (f"; for the predicted subtype: deletion - random {fmt_ci(pos['class_deletion_vs_random'], 3)}, "
                     f"insertion - random {fmt_ci(pos['class_insertion_vs_random'], 3)}")
        print(line)
    print(f"  ECE {res['calibration']['ece']:.4f}; confusion [[TN, FP], [FN, TP]] = {res['confusion_matrix']}")
    if res["unreadable"]:
        print(f"  {len(res['unreadable'])} unreadable file(s) skipped (listed in the JSON)")
    for out in (args.json_out, args.report):
        if out:
            print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_runs

    table = compare_runs(args.runs, args.out, split=args.split, n_boot=args.n_boot)
    print(table["markdown"])
    print(f"wrote {args.out}")
    return 0
