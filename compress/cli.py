"""`leukedge compress` and `leukedge parity` (argparse only at import; TensorFlow inside the handlers)."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

GATE_HELP = ("override a parity gate, e.g. --gate max_delta_accuracy=0.02 (names: max_delta_accuracy, "
             "max_delta_sensitivity, max_delta_roc_auc, min_agreement, min_heatmap_correlation)")


def register(sub) -> None:
    c = sub.add_parser("compress", help="export a trained run to TFLite (float32, int8, pruned int8) + parity",
                       description="Turn a training run into a release folder models/<name>/: float32 and "
                                   "full-integer int8 TFLite with Grad-CAM computed in the graph, optional pruned int8, "
                                   "spec.json, split.csv, then parity of each file against float32 on the test split.")
    c.add_argument("source", metavar="RUN_OR_MODEL", help="training run folder (best.h5, spec.json, split.csv), a .h5 file, or a release folder "
                   "(models/<name>: int8 re-derived from its float32 .tflite)")
    c.add_argument("--out", required=True, help="release folder, e.g. models/efficientnet-lite0-binary")
    c.add_argument("--variants", default="float32,int8",
                   help="comma list of float32,int8,int16x8,float16,dynamic (default float32,int8; float32 always; "
                        "int16x8: int8 weights, 16-bit activations, for models whose int8 misses parity)")
    c.add_argument("--prune", type=float, nargs="?", const=0.5, default=None, metavar="SPARSITY",
                   help="also write <name>.pruned-int8.tflite pruned to SPARSITY (default 0.5 when given bare)")
    c.add_argument("--prune-epochs", type=int, default=4,
                   help="fine-tuning epochs while pruning (default 4: sparsity ramps up over the first half of the "
                        "steps, then recovery with the masks fixed)")
    c.add_argument("--prune-min-weights", type=int, default=2048,
                   help="kernels with fewer weights stay dense (default 2048: the stem conv and the narrowest "
                        "projections; 0 prunes every prunable layer)")
    c.add_argument("--prune-batch-size", type=int, default=16)
    c.add_argument("--prune-lr", type=float, default=1e-4, help="fine-tuning learning rate (default 1e-4)")
    c.add_argument("--prune-max-images", type=int, default=None, help="use at most N training images to fine-tune")
    c.add_argument("--prune-feature-distill", type=float, default=0.0, metavar="W",
                   help="also pull the pruned feature map (Grad-CAM input) towards the unpruned one with weight W "
                        "(default 0: closer decisions; 1: closer heatmaps, see the README)")
    c.add_argument("--prune-cam-distill", type=float, default=0.0, metavar="W",
                   help="also pull the pruned Grad-CAM map towards the unpruned one (weight W on 1 - per-image "
                        "correlation, the heatmap gate's measure; default 0)")
    c.add_argument("--prune-logit-distill", type=float, default=0.0, metavar="W",
                   help="also pull the pruned model's logits towards the unpruned one's (mean squared error, "
                        "weight W): decisions are thresholds on the logit, which the probability loss barely "
                        "weighs far from 0.5 (default 0)")
    c.add_argument("--prune-block", type=int, default=1, metavar="B",
                   help="prune whole blocks of B consecutive input weights of a filter (tfmot block sparsity; "
                        "contiguous in the .tflite, so the pruned file gzips smaller; EfficientNet-Lite0 at 50%%: "
                        "18.1%% of float32 weight by weight, 16.1%% in blocks of 4, but heatmap r 0.909 -> 0.859; "
                        "default 1)")
    c.add_argument("--prune-clusters", type=int, default=0, metavar="K",
                   help="after pruning, tie each pruned kernel to K shared values with its zeros kept (tfmot "
                        "sparsity-preserving clustering, fine-tuned with the same distillation): the pruned int8 "
                        "file then gzips smaller (default 0: off)")
    c.add_argument("--prune-cluster-epochs", type=int, default=4, metavar="N",
                   help="fine-tuning epochs of the clustering (default 4)")
    c.add_argument("--prune-cluster-lr", type=float, default=1e-5, help="clustering learning rate (default 1e-5)")
    c.add_argument("--prune-labels", action="store_true",
                   help="fine-tune the pruned model on the labels (default: on the unpruned model's probabilities)")
    c.add_argument("--prune-select-every", type=int, default=0, metavar="N",
                   help="every N epochs of the pruned model's last fine-tune (clustering, else pruning once at the "
                        "target sparsity) make the pruned int8 file, compare it with float32 on the validation split "
                        "and keep the closest checkpoint (default 0: the last epoch)")
    c.add_argument("--qat", action="store_true",
                   help="experimental: make the int8 file from a quantization-aware fine-tuned copy (tfmot, towards "
                        "the float model's probabilities); float32 stays as trained and parity decides (on DenseNet201 "
                        "it measured worse than post-training int8, see the README)")
    c.add_argument("--qat-epochs", type=int, default=1, help="QAT fine-tuning epochs (default 1)")
    c.add_argument("--qat-lr", type=float, default=1e-5, help="QAT learning rate (default 1e-5)")
    c.add_argument("--qat-batch-size", type=int, default=16)
    c.add_argument("--qat-max-images", type=int, default=None, help="use at most N training images for QAT")
    c.add_argument("--qat-feature-distill", type=float, default=0.0, metavar="W",
                   help="QAT: also pull the feature map towards the float model's (as --prune-feature-distill)")
    c.add_argument("--qat-cam-distill", type=float, default=0.0, metavar="W",
                   help="QAT: also pull the Grad-CAM map towards the float model's (as --prune-cam-distill)")
    c.add_argument("--qat-logit-distill", type=float, default=0.0, metavar="W",
                   help="QAT: also pull the logits towards the float model's (as --prune-logit-distill)")
    c.add_argument("--qat-select-every", type=int, default=0, metavar="N",
                   help="QAT: keep the checkpoint whose int8 file is closest to float32 on the validation split, "
                        "scoring every N epochs and the last (as --prune-select-every; default 0: the last epoch)")
    c.add_argument("--per-tensor", action="store_true",
                   help="the int8 file's weights with one scale per tensor instead of one per output channel: no "
                        "per-channel scale/zero-point vectors (EfficientNet-Lite0: 28.8%% -> 25.7%% of float32) but "
                        "coarser weights; with --qat the fine-tune learns them (see the README). The pruned int8 "
                        "file stays per channel")
    c.add_argument("--keep-int8", action="store_true",
                   help="with a release folder as the source: keep its int8 file byte for byte (and how it was "
                        "made, e.g. QAT) and check it again, instead of re-deriving it from the float32 file; "
                        "e.g. to try another --prune recipe")
    c.add_argument("--reexport-float32", action="store_true",
                   help="with a release folder as the source: make its float32 file again with the current "
                        "exporter from the recovered Keras model (same function, checked on validation images) "
                        "instead of keeping it byte for byte, e.g. to drop a second copy of the head's weights "
                        "an older exporter stored")
    c.add_argument("--calib", type=int, default=300, help="calibration images from the training split (default 300)")
    c.add_argument("--clip-percentile", default=None, metavar="P|auto",
                   help="percentile calibration: clip each int8 activation range to the P-th percentile of the "
                        "activations (e.g. 99.99) instead of min/max: finer int8 steps, a few saturated outliers; "
                        "'auto' tries min/max, 99.999, 99.99 and 99.9 and keeps the closest to float32 on the "
                        "validation split (DenseNet201 needs it, see the README)")
    c.add_argument("--clip-images", type=int, default=32,
                   help="calibration images the percentiles are measured on (default 32)")
    c.add_argument("--bn-depthwise", action="store_true",
                   help="quantize BatchNorms after a Concatenate (DenseNet) as per-channel 1x1 depthwise convs: "
                        "closer to float32, larger file (DenseNet201: +2.6 MiB, see the README)")
    c.add_argument("--data", default=None, help="data folder (default: the run's config.json, else ../shared/data/aria-all)")
    c.add_argument("--no-parity", action="store_true", help="only write the files (no parity, evaluation or card)")
    c.add_argument("--no-selective", action="store_true", help="do not keep layers in float when int8 fails a gate")
    c.add_argument("--no-keras-check", action="store_true", help="skip float32 TFLite vs Keras (GradientTape) parity")
    c.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for the CIs (default 1000)")
    c.add_argument("--ood-check", action="append", default=[], metavar="DIR",
                   help="out-of-domain image folder whose flagged rate the OOD gate reports (repeatable)")
    c.add_argument("--gate", action="append", metavar="NAME=VALUE", help=GATE_HELP)
    c.add_argument("--sign-key", default=None, metavar="KEY",
                   help="Ed25519 private key (PEM): sign the finished release (`leukedge release sign`, docs/trust.md)")
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
def cmd_compress(args: argparse.Namespace) -> int:
    from leukedge.errors import ConfigError

    from .parity import Gates
    from .pipeline import CompressConfig, run_compress
    from .quantization import parse_variants
    from .sizes import breakdown_line

    cfg = CompressConfig(source=args.source, out=args.out, variants=parse_variants(args.variants), prune=args.prune,
                         prune_epochs=args.prune_epochs, prune_batch_size=args.prune_batch_size, prune_lr=args.prune_lr,
                         prune_max_images=args.prune_max_images, prune_distill=not args.prune_labels,
                         prune_min_weights=args.prune_min_weights,
                         prune_feature_distill=args.prune_feature_distill,
                         prune_cam_distill=args.prune_cam_distill, prune_block=args.prune_block,
                         prune_logit_distill=args.prune_logit_distill, prune_clusters=args.prune_clusters,
                         prune_cluster_epochs=args.prune_cluster_epochs, prune_cluster_lr=args.prune_cluster_lr,
                         qat=args.qat, qat_epochs=args.qat_epochs, qat_lr=args.qat_lr,
                         qat_batch_size=args.qat_batch_size, qat_max_images=args.qat_max_images,
                         qat_feature_distill=args.qat_feature_distill, qat_cam_distill=args.qat_cam_distill,
                         qat_logit_distill=args.qat_logit_distill, qat_select_every=args.qat_select_every,
                         prune_select_every=args.prune_select_every,
                         per_tensor=args.per_tensor,
                         reexport_float32=args.reexport_float32, keep_int8=args.keep_int8,
                         calib=args.calib, clip_percentile=args.clip_percentile, clip_images=args.clip_images,
                         bn_depthwise=args.bn_depthwise,
                         data_dir=args.data,
                         parity=not args.no_parity, selective=not args.no_selective,
                         keras_check=not args.no_keras_check, n_boot=args.n_boot, gates=Gates.parse(args.gate),
                         ood_check_dirs=list(args.ood_check))
    for flag, needs, on in (("--qat-select-every", "--qat", cfg.qat), ("--prune-select-every", "--prune", cfg.prune)):
        if getattr(args, flag[2:].replace("-", "_")) and on in (None, False):
            raise ConfigError(f"{flag} chooses a checkpoint of {needs}'s fine-tune: add {needs}")
    if cfg.qat:
        cfg.qat_config()  # validate early
    if cfg.clip_percentile not in (None, "auto"):
        from .ranges import check_percentile

        cfg.clip_percentile = check_percentile(cfg.clip_percentile)
    if cfg.prune is not None:
        cfg.prune_config()  # validate before minutes of work
    if args.sign_key:
        from leukedge.trust import load_private_key

        load_private_key(args.sign_key)  # a bad key fails now, not after minutes of work
    s = run_compress(cfg)
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
