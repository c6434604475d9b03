"""Signed releases: Ed25519 over card.json, a complete file list, paths inside, the trust store.

Real keys (throwaway Ed25519 pairs made here and the session key of conftest, trusted through
$LEUKEDGE_TRUSTED_KEYS), real release files (the committed EfficientNet-Lite0 int8 files) and
the real CLI. Every tampering the issue lists is tried and must be refused with one line.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from leukedge.cli import main
from leukedge.errors import ModelError
from leukedge.fileio import sha256_file
from leukedge.release_check import verify_release
from leukedge.release_sign import sign_card, sign_release
from leukedge.trust import ENV_TRUSTED_KEYS, key_id, load_private_key, private_pem, public_pem

SRC = Path("models/efficientnet-lite0-binary")
SUBTYPE = Path("models/efficientnet-lite0-subtype")
INT8 = f"{SRC.name}.int8.tflite"
RUNTIME = ("spec.json", "card.json", INT8, "ood.npz", "ood.json")
COMMITTED = sorted(p for p in Path("models").iterdir() if (p / "card.json").is_file())


def make_release(root: Path, key: Path) -> Path:
    """A small real release: the committed binary release's int8 file, spec, card and OOD gate,
    re-signed with ``key`` (the card's list is refreshed to the files present)."""
    folder = root / SRC.name
    folder.mkdir(parents=True)
    for f in RUNTIME:
        shutil.copy(SRC / f, folder / f)
    sign_release(folder, key)
    return folder


def sign_as_is(folder: Path, key: Path) -> None:
    """Sign card.json exactly as it is, checking nothing (a careless or hostile signer)."""
    sign_card(folder, load_private_key(key))


def new_key(tmp_path: Path, name: str = "stranger") -> Path:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / f"{name}.key"
    path.write_bytes(private_pem(key))
    return path


def card(folder: Path) -> dict:
    return json.loads((folder / "card.json").read_text())


def write_card(folder: Path, c: dict) -> None:
    (folder / "card.json").write_text(json.dumps(c, indent=2) + "\n")


def cli_error(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.fixture
def release(tmp_path, release_key) -> Path:
    return make_release(tmp_path / "models", release_key)


# ----- the happy path -------------------------------------------------------------------------
def test_sign_verify_roundtrip(release, release_key, capsys):
    check = verify_release(release)
    assert check.status == "verified"
    assert check.key_id == key_id(load_private_key(release_key).public_key())
    assert set(check.files) == {"spec.json", INT8, "ood.npz", "ood.json"}  # every file the runtime reads
    assert all(check.files[f] == sha256_file(release / f) for f in check.files)
    sig = json.loads((release / "card.sig").read_text())
    assert sig["algorithm"] == "ed25519" and sig["key_id"] == check.key_id and len(sig["signature"]) == 88
    assert main(["release", "verify", str(release)]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and check.key_id in out


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_releases_verify_with_the_shipped_project_key(folder):
    check = verify_release(folder)
    assert check.status == "verified" and Path(check.key_source).name == "leukedge-release.pub"
    assert {"spec.json", "ood.npz", "ood.json", f"{folder.name}.int8.tflite"} <= set(check.files)


def test_sign_cli_refreshes_hashes_and_never_shows_the_private_key(tmp_path, release_key, capsys):
    folder = tmp_path / SRC.name
    folder.mkdir()
    for f in RUNTIME:
        shutil.copy(SRC / f, folder / f)
    assert main(["release", "sign", str(folder), "--key", str(release_key)]) == 0
    out = capsys.readouterr()
    secret = release_key.read_text()
    assert "PRIVATE" not in out.out + out.err and secret.splitlines()[1] not in out.out + out.err
    assert "PRIVATE" not in "".join(p.read_text(errors="ignore") for p in folder.iterdir() if p.is_file()
                                    and p.suffix in (".json", ".sig", ".md"))
    # the float32 and pruned files are not in this copy: the refreshed card lists only what is there
    assert set(card(folder)["files"]) == {"spec.json", INT8, "ood.npz", "ood.json"}
    assert card(folder)["file_sizes"][INT8] == (folder / INT8).stat().st_size
    assert verify_release(folder).status == "verified"


def test_keygen_then_a_clinic_key_is_trusted_once_its_public_half_is_in_the_store(tmp_path, monkeypatch, capsys):
    prefix = tmp_path / "keys" / "clinic"
    assert main(["release", "keygen", str(prefix)]) == 0
    key, pub = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and b"PUBLIC KEY" in pub.read_bytes()
    assert main(["release", "keygen", str(prefix)]) == 2  # never overwrites a key
    folder = make_release(tmp_path / "models", key)        # signs; warns that the key is not trusted
    with pytest.raises(ModelError, match="not in the trust store"):
        verify_release(folder)
    clinic = tmp_path / "clinic-trust"
    clinic.mkdir()
    shutil.copy(pub, clinic / "clinic.pub")
    monkeypatch.setenv(ENV_TRUSTED_KEYS, os.pathsep.join([os.environ[ENV_TRUSTED_KEYS], str(clinic)]))
    assert verify_release(folder).status == "verified"


# ----- tampering --------------------------------------------------------------------------------
def test_threshold_raised_with_card_hash_updated_but_not_resigned(release, capsys):
    spec = json.loads((release / "spec.json").read_text())
    spec["threshold"] = 1.0
    spec["operating_points"][0]["threshold"] = 1.0
    (release / "spec.json").write_text(json.dumps(spec, indent=2))
    c = card(release)
    c["files"]["spec.json"] = c["spec_sha256"] = sha256_file(release / "spec.json")
    write_card(release, c)
    with pytest.raises(ModelError, match="signature does not match card.json"):
        verify_release(release)
    rc, err = cli_error(capsys, "release", "verify", release)
    assert rc == 2 and len(err) == 1 and err[0].startswith("leukedge: error:") and "signature" in err[0]


def test_swapped_model_file_is_refused(release):
    shutil.copy(SUBTYPE / f"{SUBTYPE.name}.int8.tflite", release / INT8)
    with pytest.raises(ModelError, match=r"sha256 .* does not match the model card"):
        verify_release(release)


def test_hash_key_deleted_is_refused_signed_or_not(release, release_key):
    c = card(release)
    del c["files"][INT8]
    write_card(release, c)
    with pytest.raises(ModelError, match="signature does not match"):
        verify_release(release)
    with pytest.raises(ModelError, match=f"{INT8} not listed in card.json"):
        sign_release(release, release_key, refresh=False)  # `release sign` refuses to sign an incomplete card
    sign_as_is(release, release_key)                       # and a signer who signs it anyway is refused too
    with pytest.raises(ModelError, match=f"{INT8} not listed in card.json"):
        verify_release(release)
    c = card(release)
    del c["files"]
    write_card(release, c)
    sign_as_is(release, release_key)
    with pytest.raises(ModelError, match="field 'files' is missing"):
        verify_release(release)


def test_figures_the_app_shows_are_listed_and_checked(release, release_key):
    shutil.copytree(SRC / "figures", release / "figures")
    with pytest.raises(ModelError, match="figures/.*not listed in card.json"):
        verify_release(release)                            # new figures: the card must vouch for them
    sign_release(release, release_key)
    assert "figures/roc.png" in verify_release(release).files
    shutil.copy(release / "figures" / "confusion.png", release / "figures" / "roc.png")
    with pytest.raises(ModelError, match=r"roc.png: sha256"):
        verify_release(release)


def test_provenance_records_are_signed_with_the_release(release, release_key):
    """recipe.json, parity.json, ... are listed when signing: editing the recipe or a measured
    number afterwards is refused like a swapped model file (release verify, predict, the app)."""
    (release / "recipe.json").write_text(json.dumps({"quantize": {"per_tensor": False}}) + "\n")
    (release / "bench").mkdir()
    (release / "bench" / "captures.json").write_text('{"summary": {"clean_correct": 0.98}}\n')
    sign_release(release, release_key)
    check = verify_release(release)
    assert {"recipe.json", "bench/captures.json"} <= set(check.files)
    (release / "bench" / "captures.json").write_text('{"summary": {"clean_correct": 1.0}}\n')
    with pytest.raises(ModelError, match=r"captures.json: sha256"):
        verify_release(release)
    sign_release(release, release_key)
    (release / "recipe.json").write_text(json.dumps({"quantize": {"per_tensor": True}}) + "\n")
    with pytest.raises(ModelError, match=r"recipe.json: sha256"):
        verify_release(release)


def test_file_removed_from_disk_is_refused(release):
    (release / "ood.json").unlink()
    with pytest.raises(ModelError, match="ood.json: listed in the model card but missing"):
        verify_release(release)


def test_card_files_as_a_list_is_one_line(release, release_key, capsys):
    c = card(release)
    c["files"] = sorted(c["files"])
    write_card(release, c)
    sign_as_is(release, release_key)
    rc, err = cli_error(capsys, "release", "verify", release)
    assert rc == 2 and len(err) == 1 and "field 'files'" in err[0]


@pytest.mark.parametrize("stats_file", ["../x.npz", "/etc/x.npz", "sub/../../x.npz"])
def test_stats_file_outside_the_folder_is_refused(release, release_key, stats_file):
    (release.parent / "x.npz").write_bytes((release / "ood.npz").read_bytes())
    spec = json.loads((release / "spec.json").read_text())
    spec["ood"]["stats_file"] = stats_file
    (release / "spec.json").write_text(json.dumps(spec, indent=2))
    with pytest.raises(ModelError, match="ood.stats_file"):
        sign_release(release, release_key)
    c = card(release)                                      # a signer who lists it anyway
    c["files"]["spec.json"] = c["spec_sha256"] = sha256_file(release / "spec.json")
    write_card(release, c)
    sign_as_is(release, release_key)
    with pytest.raises(ModelError, match="stats_file"):
        verify_release(release)


def test_symlink_leading_out_of_the_folder_is_refused(release, release_key, tmp_path):
    outside = tmp_path / "elsewhere.npz"
    outside.write_bytes((release / "ood.npz").read_bytes())
    (release / "ood.npz").unlink()
    (release / "ood.npz").symlink_to(outside)              # same bytes, same hash: only the path is wrong
    with pytest.raises(ModelError, match="leads outside the release folder"):
        verify_release(release)
    with pytest.raises(ModelError, match="leads outside the release folder"):
        sign_release(release, release_key)


def test_card_listing_a_path_outside_is_refused(release, release_key):
    c = card(release)
    c["files"]["../card.json"] = "0" * 64
    write_card(release, c)
    sign_as_is(release, release_key)
    with pytest.raises(ModelError, match="inside the release folder"):
        verify_release(release)


def test_signature_from_an_untrusted_key(release, tmp_path):
    stranger = new_key(tmp_path)
    sign_release(release, stranger)
    kid = key_id(load_private_key(stranger).public_key())
    with pytest.raises(ModelError, match=f"signed by key {kid}, which is not in the trust store"):
        verify_release(release)


def test_signature_copied_from_another_release_does_not_match(release, release_key, tmp_path):
    other = make_release(tmp_path / "other", release_key)
    c = card(other)
    c["version"] = "9.9.9"
    write_card(other, c)
    shutil.copy(release / "card.sig", other / "card.sig")
    with pytest.raises(ModelError, match="signature does not match"):
        verify_release(other)


@pytest.mark.parametrize("content", [None, b"", b"{not json", b'{"algorithm": "rsa", "key_id": "x", "signature": "y"}',
                                     b'{"algorithm": "ed25519", "key_id": "KID", "signature": "!!!"}'])
def test_missing_or_malformed_signature(release, content):
    if content is None:
        (release / "card.sig").unlink()
        match = "unsigned release"
    else:
        kid = json.loads((release / "card.sig").read_text())["key_id"]
        (release / "card.sig").write_bytes(content.replace(b"KID", kid.encode()))
        match = "signature"
    with pytest.raises(ModelError, match=match):
        verify_release(release)


# ----- enforcement and --allow-unsigned ------------------------------------------------------------
def test_predict_refuses_unsigned_and_allow_unsigned_is_reported(release, smear_paths, capsys):
    (release / "card.sig").unlink()
    smear = smear_paths["Pro"][0]
    rc, err = cli_error(capsys, "predict", smear, "--model", release, "--json")
    assert rc == 2 and len(err) == 1 and "unsigned release" in err[0] and "--allow-unsigned" in err[0]
    assert main(["predict", str(smear), "--model", str(release), "--json", "--allow-unsigned"]) == 0
    out = json.loads(capsys.readouterr().out)
    # screened (a decision, no error; the probability is null only when a gate hid it)
    assert out[0]["signature"] == "unsigned" and out[0]["decision"] is not None and out[0]["error"] is None
    assert (out[0]["probability"] is None) == (out[0]["decision"] not in ("positive", "negative"))


def test_predict_json_says_verified(release, smear_paths, capsys):
    assert main(["predict", str(smear_paths["Benign"][0]), "--model", str(release), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["signature"] == "verified"


def test_load_release_and_screener_expose_the_signature_status(release):
    from leukedge.edge_app.inference import Screener, load_release

    assert load_release(release).signature_status == "verified"
    (release / "card.sig").unlink()
    with pytest.raises(ModelError, match="unsigned release"):
        Screener(release)
    rel = load_release(release, allow_unsigned=True)
    assert rel.signature_status == "unsigned" and "no card.sig" in rel.signature_problem
    assert Screener(rel).screen_image(SRC / "figures" / "roc.png", heatmap=False).signature == "unsigned"


def test_allow_unsigned_does_not_allow_a_tampered_file(release):
    from leukedge.edge_app.inference import load_release

    (release / "card.sig").unlink()
    data = bytearray((release / INT8).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (release / INT8).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_release(release, allow_unsigned=True)


def test_evaluate_verifies_the_spec_and_says_when_a_file_is_unverified(release, smear_paths, tmp_path, capsys):
    data = tmp_path / "data"
    for c in ("Benign", "Pro"):
        (data / c).mkdir(parents=True)
        for p in smear_paths[c][:3]:
            (data / c / p.name).symlink_to(p)
    spec = json.loads((release / "spec.json").read_text())
    spec["threshold"] = 0.999
    (release / "spec.json").write_text(json.dumps(spec))
    rc, err = cli_error(capsys, "evaluate", "--model", release, "--data", data, "--all", "--gradcam", "0",
                        "--mask-corners", "0", "--n-boot", "100")
    assert rc == 2 and len(err) == 1 and "spec.json" in err[0] and "sha256" in err[0]
    out = tmp_path / "e.json"                              # a lone .tflite is allowed, and says so
    assert main(["evaluate", "--model", str(release / INT8), "--data", str(data), "--all", "--gradcam", "0",
                 "--mask-corners", "0", "--n-boot", "100", "--json", str(out)]) == 0
    assert "UNVERIFIED" in capsys.readouterr().out
    assert json.loads(out.read_text())["model"]["signature"] == "unverified"


def test_parity_refuses_unsigned_with_exit_2(release, tmp_path, capsys):
    (release / "card.sig").unlink()
    rc, err = cli_error(capsys, "parity", "--reference", release, "--candidate", release, "--data", tmp_path,
                        "--all")
    assert rc == 2 and len(err) == 1 and "unsigned release" in err[0]


def test_bench_refuses_unsigned_release(release, capsys):
    (release / "card.sig").unlink()
    rc, err = cli_error(capsys, "bench", release, "--quick")
    assert rc == 2 and len(err) == 1 and "unsigned release" in err[0]


def test_app_refuses_unsigned_before_a_window_opens(release, capsys):
    (release / "card.sig").unlink()
    rc, err = cli_error(capsys, "app", "--model", release)
    assert rc == 2 and len(err) == 1 and "unsigned release" in err[0]


# ----- model file vs spec ---------------------------------------------------------------------------
def test_subtype_model_under_a_binary_spec_is_refused_before_scoring(release, release_key, capsys, smear_paths):
    from leukedge.edge_app.inference import Screener
    from leukedge.predictors import load_predictor

    shutil.copy(SUBTYPE / f"{SUBTYPE.name}.int8.tflite", release / INT8)
    sign_release(release, release_key)                    # even signed, the pair does not belong together
    assert verify_release(release).status == "verified"
    for load in (Screener, load_predictor):
        with pytest.raises(ModelError, match=r"output '(probability|logit)' has 4 values but the binary spec"):
            load(release)
    rc, err = cli_error(capsys, "predict", smear_paths["Pro"][0], "--model", release)
    assert rc == 2 and len(err) == 1 and "4 values" in err[0]


# ----- schema ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,value,message", [
    (("preprocess", "clahe_tiles"), 0, "preprocess.clahe_tiles' = 0"),
    (("threshold",), "high", "threshold' = 'high'"),
    (("threshold",), 1.5, "threshold' = 1.5"),
    (("class_names",), ["ALL", "ALL"], "unique"),
    (("class_names",), ["", "ALL"], "non-empty"),
    (("preprocess", "input_size"), 100000, "input_size"),
    (("operating_points", 0, "threshold"), -0.1, "operating_points.0.threshold"),
    (("positive_classes",), ["Leukemia"], "positive_classes"),
    (("task",), "triage", "task"),
])
def test_spec_schema_errors_are_one_line_naming_field_and_value(release, release_key, capsys, path, value, message):
    spec = json.loads((release / "spec.json").read_text())
    obj = spec
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value
    (release / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match=message):          # `release sign` checks the schema first
        sign_release(release, release_key)
    c = card(release)                                      # a signer who signs it anyway
    c["files"]["spec.json"] = c["spec_sha256"] = sha256_file(release / "spec.json")
    write_card(release, c)
    sign_as_is(release, release_key)
    rc, err = cli_error(capsys, "release", "verify", release)
    assert rc == 2 and len(err) == 1 and message in err[0] and "spec.json" in err[0]


def test_committed_specs_pass_the_schema():
    from leukedge.spec import ModelSpec

    for folder in [*COMMITTED, Path("tests/data/legacy/efficientnet-lite0-binary")]:
        spec = ModelSpec.load(folder)
        assert spec.name and 0.0 <= spec.threshold <= 1.0


def test_compress_checks_the_signing_key_before_any_work(tmp_path, capsys):
    rc, err = cli_error(capsys, "compress", tmp_path / "no-run", "--out", tmp_path / "out",
                        "--sign-key", tmp_path / "missing.key")
    assert rc == 2 and len(err) == 1 and "missing.key: no such Ed25519 private key file" in err[0]
    public = tmp_path / "public.key"
    public.write_bytes(public_pem(Ed25519PrivateKey.generate()))
    rc, err = cli_error(capsys, "compress", tmp_path / "no-run", "--out", tmp_path / "out", "--sign-key", public)
    assert rc == 2 and len(err) == 1 and "not an unencrypted PEM private key" in err[0]
    assert not (tmp_path / "out").exists()


def test_preprocess_config_refuses_zero_clahe_tiles():
    from leukedge.errors import ConfigError
    from leukedge.preprocess import PreprocessConfig

    with pytest.raises(ConfigError, match="clahe_tiles must be >= 1"):
        PreprocessConfig(clahe_tiles=0)
