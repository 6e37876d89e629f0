"""Reference parsing, SemVer tags and the name/tag patterns that keep the store directory closed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from fluxmix.errors import BadReferenceError, FluxmixError, InvalidNameError
from fluxmix.store import HashRef, NameRef, PathRef, canonical_tag, check_hex, parse_ref
from fluxmix.refs import check_name, latest_tag, next_tag, sort_tags_desc, tag_key

HEX64 = "ab12cd34ef56" + "0" * 52
STRICT_TAG = re.compile(r"v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?", re.ASCII)


# -- canonical tags ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3", "v1.2.3"),
        ("v1.2.3", "v1.2.3"),
        ("V1.2.3", "v1.2.3"),
        ("0.0.0", "v0.0.0"),
        ("1.0.0-rc.1", "v1.0.0-rc.1"),
        ("v2.0.0-alpha.beta.1", "v2.0.0-alpha.beta.1"),
        ("10.20.30", "v10.20.30"),
    ],
)
def test_canonical_tag_accepts_semver_with_or_without_v(text: str, expected: str) -> None:
    assert canonical_tag(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "1", "1.2", "v1.2", "01.2.3", "1.02.3", "latest", "vv1.2.3", "1.2.3 ", " 1.2.3", "1.2.3\n",
        "1.2.3-", "1.2.3-rc..1", "1.2.3-01", "١.2.3", "1.2.３", "v1.2.3/../x", "../1.2.3", "1.2.3\x00",
        "/1.2.3", "1" * 200 + ".0.0", "x.y.z",
    ],
)
def test_canonical_tag_refuses_non_semver(text: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid tag"):
        canonical_tag(text)


def test_build_metadata_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidNameError) as caught:
        canonical_tag("1.0.0+build.5")
    message = str(caught.value)
    assert "build metadata (+build.5)" in message
    assert "ignores" in message and "-build.5" in message


def test_ordering_follows_semver_not_text() -> None:
    tags = ["v1.9.0", "v1.9.0-rc.1", "v1.10.0", "v1.9.0-alpha", "v0.99.0"]
    assert sort_tags_desc(tags) == ["v1.10.0", "v1.9.0", "v1.9.0-rc.1", "v1.9.0-alpha", "v0.99.0"]


def test_latest_is_highest_release_and_prerelease_only_without_releases() -> None:
    assert latest_tag(["v1.9.0", "v1.10.0", "v1.9.0-rc.1"]) == "v1.10.0"
    assert latest_tag(["v1.0.0", "v2.0.0-rc.1"]) == "v1.0.0"
    assert latest_tag(["v2.0.0-beta.2", "v2.0.0-rc.1", "v1.0.0-rc.9"]) == "v2.0.0-rc.1"
    assert latest_tag([]) is None


def test_next_tag_is_next_minor_after_the_highest() -> None:
    assert next_tag([]) == "v0.1.0"
    assert next_tag(["v0.1.0"]) == "v0.2.0"
    assert next_tag(["v1.4.2", "v0.9.0"]) == "v1.5.0"
    assert next_tag(["v1.9.0", "v1.10.0"]) == "v1.11.0"
    assert next_tag(["v2.0.0-rc.1", "v1.0.0"]) == "v2.1.0"


_identifier = st.one_of(
    st.integers(0, 10_000).map(str),
    st.from_regex(r"[A-Za-z-][0-9A-Za-z-]{0,8}", fullmatch=True),
)
_versions = st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))


@given(_versions, st.lists(_identifier, max_size=3))
def test_canonical_tag_is_idempotent_and_prefix_insensitive(version: tuple[int, int, int], pre: list[str]) -> None:
    text = ".".join(map(str, version)) + (f"-{'.'.join(pre)}" if pre else "")
    tag = canonical_tag(text)
    assert tag == f"v{text}"
    assert canonical_tag(tag) == tag == canonical_tag("V" + text)
    assert STRICT_TAG.fullmatch(tag)


@given(st.lists(_versions, min_size=1, max_size=20, unique=True))
def test_release_ordering_matches_numeric_tuples(versions: list[tuple[int, int, int]]) -> None:
    tags = [canonical_tag("%d.%d.%d" % v) for v in versions]
    expected = ["v%d.%d.%d" % v for v in sorted(versions, reverse=True)]
    assert sort_tags_desc(tags) == expected
    assert latest_tag(tags) == expected[0]


_small_versions = st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))
_pre_identifier = st.one_of(st.integers(0, 12).map(str), st.sampled_from(["a", "alpha", "b", "rc", "RC", "x-1", "0a"]))
_prereleases = st.lists(_pre_identifier, max_size=3)


@given(_small_versions, _prereleases, _small_versions, _prereleases)
def test_tag_ordering_agrees_with_the_semver_library(
    v1: tuple[int, int, int], p1: list[str], v2: tuple[int, int, int], p2: list[str]
) -> None:
    texts = ["%d.%d.%d" % v + (f"-{'.'.join(p)}" if p else "") for v, p in ((v1, p1), (v2, p2))]
    a, b = (canonical_tag(t) for t in texts)
    expected = semver.Version.parse(texts[0]).compare(texts[1])
    actual = (tag_key(a) > tag_key(b)) - (tag_key(a) < tag_key(b))
    assert actual == expected, (a, b)


@given(st.text(max_size=40))
def test_any_text_is_either_refused_or_a_strict_ascii_tag(text: str) -> None:
    try:
        tag = canonical_tag(text)
    except InvalidNameError:
        return
    assert STRICT_TAG.fullmatch(tag)


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["payment-flow", "a", "0", "visa.v2", "a_b", "x" * 64])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


ESCAPING_NAMES = [
    "../x", "a/b", "..", ".", "/etc/passwd", "a\\b", "a\x00b", "", "x" * 65, "-x", ".hidden", "_x",
    "Payment", "a b", "a\n", "ｐayment",  # fullwidth p
    "payment-flоw",  # Cyrillic o
    "pay\u200bment",  # zero-width space
]


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_names_that_could_escape_or_deceive_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid name"):
        check_name(name)


@given(st.text(max_size=70))
def test_accepted_names_are_plain_ascii_path_components(text: str) -> None:
    try:
        check_name(text)
    except InvalidNameError:
        return
    assert text.isascii() and "/" not in text and "\\" not in text and text not in (".", "..")
    assert Path(text).name == text


# -- hashes -----------------------------------------------------------------------------------


def test_check_hex_normalises_and_refuses_anything_else() -> None:
    assert check_hex(HEX64) == HEX64
    assert check_hex("sha256:" + HEX64.upper()) == HEX64
    for bad in ["", HEX64[:63], HEX64 + "0", "../" + HEX64[3:], HEX64[:63] + "g", HEX64[:62] + "/x"]:
        with pytest.raises(BadReferenceError, match="64 hex digits"):
            check_hex(bad)


# -- references -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("payment-flow", NameRef("payment-flow", None)),
        ("payment-flow:latest", NameRef("payment-flow", None)),
        ("payment-flow:v1.2.0", NameRef("payment-flow", "v1.2.0")),
        ("payment-flow:1.2.0", NameRef("payment-flow", "v1.2.0")),
        ("payment-flow:V1.2.0-rc.1", NameRef("payment-flow", "v1.2.0-rc.1")),
        ("sha256:" + HEX64, HashRef(HEX64)),
        ("sha256:" + HEX64[:12], HashRef(HEX64[:12])),
        ("SHA256:" + HEX64[:12].upper(), HashRef(HEX64[:12])),
        ("./flow.yaml", PathRef(Path("./flow.yaml"))),
        ("scenarios/flow.yaml", PathRef(Path("scenarios/flow.yaml"))),
        ("/abs/flow.yaml", PathRef(Path("/abs/flow.yaml"))),
        ("file:///abs/my%20flow.yaml", PathRef(Path("/abs/my flow.yaml"))),
    ],
)
def test_parse_ref_forms(text: str, expected: object) -> None:
    assert parse_ref(text) == expected


def test_existing_file_is_a_path_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flow.yaml").write_text("name: x\n")
    assert parse_ref("flow.yaml") == PathRef(Path("flow.yaml"))
    assert parse_ref("other.yaml") == NameRef("other.yaml", None)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty reference"),
        ("sha256:", "12 to 64 hex digits"),
        ("sha256:abc", "12 to 64 hex digits"),
        ("sha256:" + "g" * 12, "12 to 64 hex digits"),
        ("sha256:" + "0" * 65, "12 to 64 hex digits"),
        ("sha256:../../etc/passwd", "12 to 64 hex digits"),
        ("Payment-Flow", "must be 1-64 characters"),
        ("payment-flow:", "invalid tag"),
        ("payment-flow:1.0", "invalid tag"),
        ("payment-flow:1.0.0+b1", "build metadata"),
        ("a:b:c", "invalid tag"),
        ("..", "must be 1-64 characters"),
        ("x" * 65, "must be 1-64 characters"),
    ],
)
def test_bad_references_name_the_reference_and_the_valid_forms(text: str, fragment: str) -> None:
    with pytest.raises(BadReferenceError) as caught:
        parse_ref(text)
    message = str(caught.value)
    assert fragment in message
    if text:
        assert repr(text)[:40].rstrip("'") in message


@given(st.text(max_size=80))
def test_parse_ref_only_raises_fluxmix_errors(text: str) -> None:
    try:
        ref = parse_ref(text)
    except FluxmixError:
        return
    assert isinstance(ref, NameRef | HashRef | PathRef)
    if isinstance(ref, NameRef):
        check_name(ref.name)
        assert ref.tag is None or STRICT_TAG.fullmatch(ref.tag)
