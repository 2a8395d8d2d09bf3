"""Cursors: opaque, signed, bound to domain + tenant + mode + stream; anything else is 410."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError

SECRET = b"0123456789abcdef-cursor-secret"
codec = CursorCodec(SECRET)
BINDING = ("chat", "t_alpha", "lab", "thread-1")

positions = st.text(min_size=0, max_size=60)
# Bindings are validated ids (tenant pattern, ID_PATTERN), so they never contain separators.
names = st.from_regex(r"[A-Za-z0-9_.:\-]{1,20}", fullmatch=True)


def _invalid(cursor: str, binding: tuple[str, str, str, str] = BINDING) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        codec.decode(*binding, cursor)
    return info.value


def test_a_cursor_decodes_to_its_position() -> None:
    cursor = codec.encode(*BINDING, "s#0000000000000042")
    assert codec.decode(*BINDING, cursor) == "s#0000000000000042"


@given(position=positions)
def test_every_position_round_trips(position: str) -> None:
    assert codec.decode(*BINDING, codec.encode(*BINDING, position)) == position


def test_a_cursor_is_opaque() -> None:
    cursor = codec.encode(*BINDING, "s#0000000000000042")
    assert "t_alpha" not in cursor and "thread-1" not in cursor


def test_a_tampered_position_is_410_with_the_cursor_in_details() -> None:
    cursor = codec.encode(*BINDING, "s#0000000000000001")
    forged = codec.encode(*BINDING, "s#0000000000000099").split(".")[1]
    version, _, mac = cursor.split(".")
    tampered = f"{version}.{forged}.{mac}"
    err = _invalid(tampered)
    assert (err.code, err.http_status, err.details["cursor"]) == ("chat.cursor_invalid", 410, tampered)


def test_a_foreign_tenants_cursor_is_410() -> None:
    cursor = codec.encode("chat", "t_other", "lab", "thread-1", "s#0000000000000001")
    err = _invalid(cursor)
    assert (err.code, err.http_status, err.details["cursor"]) == ("chat.cursor_invalid", 410, cursor)


def test_a_cursor_of_another_stream_is_410() -> None:
    cursor = codec.encode("chat", "t_alpha", "lab", "thread-2", "s#0000000000000001")
    assert _invalid(cursor).http_status == 410


def test_a_cursor_of_another_mode_or_domain_is_410() -> None:
    position = "s#0000000000000001"
    assert _invalid(codec.encode("chat", "t_alpha", "saas", "thread-1", position)).http_status == 410
    other_domain = codec.encode("canvas", "t_alpha", "lab", "thread-1", position)
    assert _invalid(other_domain).code == "chat.cursor_invalid"


def test_a_cursor_signed_with_another_secret_is_410() -> None:
    cursor = CursorCodec(b"another-secret-of-16-bytes").encode(*BINDING, "s#1")
    assert _invalid(cursor).http_status == 410


@pytest.mark.parametrize(
    "garbage", ["", "x", "1..", "1.@@@.###", "2.YQ.YQ", "1.YQ", "a.b.c.d", "1.//8.AAAA", "1.\u00e9.x"]
)
def test_garbage_is_410_with_the_cursor_in_details(garbage: str) -> None:
    err = _invalid(garbage)
    assert (err.code, err.http_status, err.details["cursor"]) == ("chat.cursor_invalid", 410, garbage)


def test_an_oversized_cursor_is_410() -> None:
    err = _invalid("1." + "A" * 5000 + ".x")
    assert err.http_status == 410 and len(err.details["cursor"]) <= 64


@given(garbage=st.text(max_size=80))
def test_arbitrary_text_is_never_accepted_as_a_cursor(garbage: str) -> None:
    with pytest.raises(NorthstarError) as info:
        codec.decode(*BINDING, garbage)
    assert info.value.http_status == 410


@given(
    position=positions,
    a=st.tuples(names, names, names, names),
    b=st.tuples(names, names, names, names),
)
def test_a_cursor_verifies_only_under_its_own_binding(
    position: str, a: tuple[str, str, str, str], b: tuple[str, str, str, str]
) -> None:
    cursor = codec.encode(*a, position)
    if a == b:
        assert codec.decode(*b, cursor) == position
    else:
        with pytest.raises(NorthstarError):
            codec.decode(*b, cursor)


@given(position=positions, index=st.integers(min_value=0), flip=st.integers(1, 255))
def test_changing_any_character_invalidates_the_cursor(position: str, index: int, flip: int) -> None:
    cursor = codec.encode(*BINDING, position)
    i = index % len(cursor)
    changed = cursor[:i] + chr((ord(cursor[i]) + flip) % 128 or 1) + cursor[i + 1 :]
    try:
        decoded = codec.decode(*BINDING, changed)
    except NorthstarError as exc:
        assert exc.http_status == 410
        return
    # Only base64 padding bits can absorb a change: the same position, never another one.
    assert decoded == position


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        CursorCodec(b"short")


def test_bindings_that_would_join_to_the_same_string_do_not_share_cursors() -> None:
    codec = CursorCodec(b"0123456789abcdef0123456789abcdef")
    cursor = codec.encode("chat", "t_a", "lab\x1ex", "s", "p")
    with pytest.raises(NorthstarError) as info:
        codec.decode("chat", "t_a", "lab", "x\x1es", cursor)
    assert info.value.http_status == 410
