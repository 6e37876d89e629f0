"""fluxmix.refs: the one reference grammar the store, validation and the CLI share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fluxmix.refs import HashRef, PathRef, check_spec_reference, looks_like_path, parse_ref, store_ref_problem

HEX = "ab" * 32


def test_the_grammar_loads_without_the_database() -> None:
    """Validation and the CLI parse references without importing SQLAlchemy (the store's job)."""
    code = "import sys, fluxmix.refs, fluxmix.validation; print('sqlalchemy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "is_path"),
    [
        ("visa", False),
        ("visa:v1.0.0", False),
        (f"sha256:{HEX[:12]}", False),
        (f"SHA256:{HEX[:12].upper()}", False),
        ("sha256:abc/def", False),  # a hash reference, even with a slash (refused as a bad hash, not read as a file)
        ("flows/visa.yaml", True),
        ("./visa", True),
        ("file:///etc/fluxmix/visa.yaml", True),
    ],
)
def test_one_rule_for_is_this_a_path(text: str, is_path: bool) -> None:
    assert looks_like_path(text) is is_path
    try:
        parsed = parse_ref(text)
    except Exception:
        parsed = None
    assert isinstance(parsed, PathRef) is is_path


def test_an_existing_file_is_a_path_only_where_files_are_expected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "visa").write_text("name: visa\n")
    monkeypatch.chdir(tmp_path)
    assert looks_like_path("visa") and isinstance(parse_ref("visa"), PathRef)
    assert not looks_like_path("visa", existing_files=False)
    assert store_ref_problem("visa") is None  # a spec: reference is never a local file


def test_validation_and_the_store_accept_the_same_hash_spellings() -> None:
    """The store resolved SHA256: and uppercase hex; validation refused them. Both accept them now."""
    for text in (f"sha256:{HEX}", f"SHA256:{HEX.upper()}", f"Sha256:{HEX[:12]}"):
        assert parse_ref(text) == HashRef(HEX if len(text) > 30 else HEX[:12])
        assert check_spec_reference(text) is None
