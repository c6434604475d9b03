"""`leukedge compress` and `leukedge parity` (argparse only at import; TensorFlow inside the handlers)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from .recipe_flags import KEYS, MOVED, moved_error

log = logging.getLogger(__name__)

GATE_HELP = ("override a parity gate, e.g. --gate max_delta_accuracy=0.02 (names: max_delta_accuracy, "
             "max_delta_sensitivity, max_delta_roc_auc, min_agreement, min_heatmap_correlation)")


class _Moved(argparse.Action):
    """A flag that became a recipe key: remembered, then refused with a one-line pointer."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.moved = [*(getattr(namespace, "moved", None) or []), option_string]


def register(sub) -> None:
    c = sub.add_parser("compress", help="make a release: TFLite float32 + int8 (+ pruned int8) with parity gates",
                       description="Turn a training run (or a release) into a release folder models/<name>/: float32 "
                                   "and full-integer int8 TFLite with Grad-CAM in the graph, optional pruned int8, "
                                   "parity of each against float32 on the test split, evaluation and model card. "
                                   "What is done is a recipe (docs/compression-recipe.md), saved as recipe.json in "
                                   "the release: --recipe FILE loads one, --set KEY=VALUE changes one key, and the "
                                   "flags below are shortcuts for the most used keys.",
                       epilog="examples: leukedge compress runs/<run> --out models/x --prune 0.5 --set prune.epochs=8;"
                              "  leukedge compress --recipe models/x/recipe.json --out /tmp/x-again")
    c.add_argument("source", metavar="RUN_OR_MODEL", nargs="?", default=None,
                   help="training run folder (best.h5, spec.json, split.csv), a .h5 file, or a release folder "
                        "(int8 re-derived from its float32 file); default: the recipe's source")
    c.add_argument("--out", default=None, help="release folder to write, e.g. models/efficientnet-lite0-binary")
    c.add_argument("--recipe", metavar="FILE", default=None,
                   help="start from this recipe (e.g. a release's recipe.json) instead of the defaults")
    c.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set one recipe key, JSON value (repeatable): e.g. --set prune.epochs=8 "
                        "--set quantize.clip_percentile=auto --set qat=null")
    c.add_argument("--data", default=None, help="data folder (default: the recipe's dataset by name, else the run's)")
    c.add_argument("--variants", default=None, help="quantize.variants as a comma list: float32,int8,int16x8,float16,dynamic")
    c.add_argument("--prune", type=float, nargs="?", const=0.5, default=None, metavar="SPARSITY",
                   help="prune.sparsity: also write <name>.pruned-int8.tflite (0.5 when bare)")
    c.add_argument("--qat", action="store_true", default=None,
                   help="qat: make int8 from a quantization-aware fine-tuned copy (experimental)")
    c.add_argument("--clip-percentile", default=None, metavar="P|auto",
                   help="quantize.clip_percentile: clip int8 activation ranges to the P-th percentile ('auto': chosen on val)")
    c.add_argument("--calib", type=int, default=None, help="quantize.calib: calibration images (default 300)")
    c.add_argument("--no-parity", action="store_true", default=None, help="checks.parity=false: only write the files")
    c.add_argument("--n-boot", type=int, default=None, help="checks.n_boot: bootstrap replicates (default 1000)")
    c.add_argument("--gate", action="append", metavar="NAME=VALUE", help=GATE_HELP)
    c.add_argument("--sign-key", default=None, metavar="KEY",
                   help="Ed25519 private key (PEM): sign the finished release (`leukedge release sign`, docs/trust.md)")
    c.add_argument("--dry-run", action="store_true", help="print the resolved recipe as JSON and stop")
    for flag in MOVED:
        c.add_argument(flag.split()[0], action=_Moved, nargs=0 if _takes_no_value(flag) else 1, help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_compress)

    p = sub.add_parser("parity", help="compare two models (e.g. int8 vs float32) on the same images, with gates",
                       description="Score the same images with a reference and a candidate model and check the parity "
                                   "gates. Exit 0 when every gate passes, 1 when one fails, 2 for unusable input.")
    p.add_argument("--reference", required=True,
                   help="a .tflite file (spec.json beside it), a release folder (its float32 file) or a run folder")
    p.add_argument("--candidate", required=True, help="a .tflite file, a release folder (its int8 file) or a run folder")
    p.add_argument("--data", default=None, help="data folder (default $LEUKEDGE_DATA or ../shared/data/aria-all)")
    p.add_argument("--all", action="store_true", help="every image of every class folder in --data (not the test split)")
    p.add_argument("--split", default=None, help="split manifest CSV (default: split.csv beside the reference/candidate)")
    p.add_argument("--subset", choices=("test", "val"), default="test",
                   help="which rows of the split manifest (default test; val: the validation split, where "
                        "compression choices are made, so the test split stays untouched)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the result as JSON")
    p.add_argument("--report", metavar="DIR", default=None, help="write parity.json, parity.md and figures/ into DIR")
    p.add_argument("--gate", action="append", metavar="NAME=VALUE", help=GATE_HELP)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for the CIs (default 1000)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="development only: run a release whose signature is missing, wrong or untrusted (results say \"unsigned\")")
    p.set_defaults(func=cmd_parity)


# ----- compress -----------------------------------------------------------------------------------
def _takes_no_value(flag: str) -> bool:
    return any(f == flag and const is not None for f, _, _, const in KEYS)


def build_recipe(args: argparse.Namespace):
    """The recipe of a command line: ``--recipe`` (or the defaults), then the shortcut flags, then
    every ``--set`` in order."""
    from .parity import Gates
    from .recipe import CompressRecipe, set_key

    if getattr(args, "moved", None):
        raise moved_error(args.moved[0])
    recipe = CompressRecipe.load(args.recipe) if args.recipe else CompressRecipe()
    shortcuts = [("quantize.variants", [v for v in args.variants.split(",") if v.strip()] if args.variants else None),
                 ("prune.sparsity", args.prune), ("qat", {} if args.qat and recipe.qat is None else None),
                 ("quantize.calib", args.calib),
                 ("quantize.clip_percentile", args.clip_percentile), ("checks.parity", False if args.no_parity else None),
                 ("checks.n_boot", args.n_boot)]
    for key, value in shortcuts:
        if value is not None:
            set_key(recipe, key, _number_or_text(value) if key == "quantize.clip_percentile" else value)
    names = {f.name for f in dataclasses.fields(Gates)}
    short = {n.split("_", 1)[1]: n for n in names}
    for item in args.gate or []:
        Gates.parse([item])  # a one-line error for a bad name or value
        name, _, value = item.partition("=")
        key = name.strip().replace("-", "_")
        set_key(recipe, f"gates.{short.get(key, key)}", float(value))
    for item in args.sets:
        recipe.set(item)
    return recipe


def _number_or_text(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def cmd_compress(args: argparse.Namespace) -> int:
    import json

    from leukedge.errors import ConfigError

    from .pipeline import run_compress
    from .recipe_keys import resolve_data, resolve_source, to_config, validate
    from .sizes import breakdown_line

    recipe = build_recipe(args)
    if args.dry_run:
        if args.source or recipe.source:  # a recipe that names its source: check it can run here
            try:
                source = resolve_source(recipe, args.source)
            except ConfigError as exc:  # say so, still print the recipe: reading one needs no source
                print(f"note: {exc.one_line()}; the recipe below cannot run here as it is", file=sys.stderr)
            else:
                data = resolve_data(recipe, args.data)
                validate(to_config(recipe, source, args.out or "dry-run", data))
                print(f"source {source}, data {data or '(the source run config)'}: found; the recipe is valid",
                      file=sys.stderr)
        print(json.dumps(recipe.to_dict(), indent=2))
        return 0
    if not args.out:
        raise ConfigError("no release folder to write", "pass --out DIR (e.g. models/<name>)")
    source = resolve_source(recipe, args.source)
    cfg = to_config(recipe, source, args.out, resolve_data(recipe, args.data))
    validate(cfg)
    if args.sign_key:
        from leukedge.trust import load_private_key

        load_private_key(args.sign_key)  # a bad key fails now, not after minutes of work
    s = run_compress(cfg, recipe)
    print(f"release {args.out}")
    _sign(args.out, args.sign_key)
    for name, d in s["files"].items():
        ratio = f"  {d['ratio_to_float32']:.1%} of float32" if d.get("ratio_to_float32") is not None else ""
        print(f"  {name:<48} {d['mib']:>8.2f} MiB  gzip {d['gzip_bytes'] / 2**20:>7.2f} MiB{ratio}")
        if d.get("breakdown") and not name.endswith(".float32.tflite"):
            print(f"    of float32: {breakdown_line(d)}")
    for k, t in s.get("targets", {}).items():
        print(f"  target {k}: {t['value']:.3f} {'met' if t['met'] else 'NOT met'}")
    if s.get("parity"):
        for label, r in s["parity"].items():
            vals = ", ".join(f"{n}={v:.4f}" if v is not None else f"{n}=n/a" for n, v in r["gates"].items())
            print(f"  parity {label}: {'PASS' if r['passed'] else 'FAIL ' + str(r['failed'])} ({vals})")
        if s.get("selective_int8"):
            sel = s["selective_int8"]
            print(f"  selective int8: {'kept ' + str(len(sel['kept_float'])) + ' op(s) in float' if sel['passed'] else 'did not pass'}")
        return 0 if s.get("passed", True) else 1
    return 0


def _sign(out: str, key: str | None) -> None:
    """Sign the finished release with ``key``, or say that it is unsigned."""
    from pathlib import Path

    if not (Path(out) / "card.json").exists():
        log.warning("%s has no card.json (no parity/card stage): not signed", out)
        return
    if not key:
        log.warning("%s is not signed: predict and the app refuse it until `leukedge release sign %s --key KEY` "
                    "(docs/trust.md)", out, out)
        return
    from leukedge.release_sign import sign_release

    print(f"  {sign_release(out, key).summary()}")


# ----- parity ---------------------------------------------------------------------------------------
def _load(path: str, prefer: str | None, allow_unsigned: bool = False):
    """A predictor from a .tflite, a release folder (``prefer`` variant if present; verified, see
    :func:`leukedge.predictors.load_predictor`) or a run folder."""
    from pathlib import Path

    from leukedge.predictors import load_predictor

    p = Path(path)
    if p.is_dir() and prefer and (p.resolve() / f"{p.resolve().name}.{prefer}.tflite").exists():
        return load_predictor(p, variant=prefer, allow_unsigned=allow_unsigned)
    return load_predictor(p, allow_unsigned=allow_unsigned)


def _split_for(args, ref, cand):
    from pathlib import Path

    if args.split:
        return Path(args.split)
    for arg in (args.reference, args.candidate):
        p = Path(arg)
        folder = p if p.is_dir() else p.parent
        if (folder / "split.csv").exists():
            return folder / "split.csv"
    from leukedge.errors import DataError

    raise DataError("no split manifest: neither model folder has split.csv",
                    "pass --split CSV (the manifest the model was trained with) or --all to use every image in --data")


def cmd_parity(args: argparse.Namespace) -> int:
    from pathlib import Path

    from leukedge.data import resolve_data_dir
    from leukedge.errors import DataError

    from .parity import Gates, ParityData, compare
    from .parity_report import write_json, write_reports

    gates = Gates.parse(args.gate)
    data_dir = resolve_data_dir(args.data)
    if not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: no such data folder", "pass --data DIR (one subfolder per class)")
    ref = _load(args.reference, "float32", args.allow_unsigned)
    cand = _load(args.candidate, None, args.allow_unsigned)
    signature = {"reference": ref.signature, "candidate": cand.signature}
    if args.all:
        data = ParityData.from_folder(data_dir)
    else:
        from leukedge.split import read_manifest

        data = ParityData.from_manifest(read_manifest(_split_for(args, ref, cand), data_dir), args.subset)
    _check_classes(set(data.classes), ref.spec)
    res = compare(ref, cand, data, gates, n_boot=args.n_boot)
    label = f"{Path(args.candidate).name} vs {Path(args.reference).name}"
    if args.json:
        write_json({label: res}, args.json, {"signature": signature})
    if args.report:
        write_reports({label: res}, args.report)
    print(f"parity: {cand.name} vs {ref.name} on {res.n} images ({data.split})")
    for role, status in signature.items():
        if status != "verified":
            print(f"  {role} signature: {'UNSIGNED release (--allow-unsigned)' if status == 'unsigned' else 'not a signed release: UNVERIFIED'}")
    print(res.table())
    m = res.metrics
    print(f"|p_ref - p_cand| mean {res.probability_diff['mean_abs']:.5f} max {res.probability_diff['max_abs']:.5f}; "
          f"McNemar p={res.mcnemar['p_value']:.4f}; accuracy {m['accuracy']['reference']:.4f} -> "
          f"{m['accuracy']['candidate']:.4f}")
    print("PASS" if res.passed else "FAIL: " + ", ".join(g.name for g in res.failed))
    return 0 if res.passed else 1


def _check_classes(classes: set, spec) -> None:
    from leukedge.errors import DataError

    known = set(spec.class_names) if spec.task == "subtype" else {spec.negative_class, *spec.positive_classes}
    unknown = sorted(classes - known)
    if unknown:
        raise DataError(f"class folder(s) {unknown} are not classes of model '{spec.name}'",
                        f"the model knows {sorted(known)}")
