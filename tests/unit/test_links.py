"""Reconnect tokens: bound to one connection, expiring, tamper-evident, and total on garbage."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.core.links import derive_link_key, reconnect_url, sign_reconnect, verify_reconnect

KEY = derive_link_key(b"k" * 32)
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

connection_ids = st.text(min_size=1, max_size=40)
keys = st.binary(min_size=16, max_size=64)
expiries = st.integers(min_value=1, max_value=10**8).map(lambda s: NOW + timedelta(seconds=s))


@given(connection_ids, expiries, keys)
def test_round_trip_verifies_before_expiry(connection_id: str, expires_at: datetime, key: bytes):
    token = sign_reconnect(connection_id, expires_at, key)
    assert verify_reconnect(token, connection_id, NOW, key)
    assert verify_reconnect(token, connection_id, expires_at - timedelta(seconds=1), key)


@given(connection_ids, expiries, st.data())
def test_any_single_character_change_fails(connection_id: str, expires_at: datetime, data: st.DataObject):
    token = sign_reconnect(connection_id, expires_at, KEY)
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != token[index]))
    tampered = token[:index] + replacement + token[index + 1 :]
    assert not verify_reconnect(tampered, connection_id, NOW, KEY)


@given(connection_ids, expiries, st.data())
def test_any_single_byte_change_fails(connection_id: str, expires_at: datetime, data: st.DataObject):
    token = sign_reconnect(connection_id, expires_at, KEY).encode("ascii")
    index = data.draw(st.integers(0, len(token) - 1))
    value = data.draw(st.integers(0, 127).filter(lambda b: b != token[index]))
    tampered = token[:index] + bytes([value]) + token[index + 1 :]
    assert not verify_reconnect(tampered.decode("ascii"), connection_id, NOW, KEY)


@given(connection_ids, connection_ids, expiries)
def test_wrong_connection_fails(connection_id: str, other: str, expires_at: datetime):
    token = sign_reconnect(connection_id, expires_at, KEY)
    assert verify_reconnect(token, other, NOW, KEY) is (other == connection_id)


@given(connection_ids, expiries, st.integers(min_value=0, max_value=10**6))
def test_expired_fails(connection_id: str, expires_at: datetime, seconds_late: int):
    token = sign_reconnect(connection_id, expires_at, KEY)
    assert not verify_reconnect(token, connection_id, expires_at + timedelta(seconds=seconds_late), KEY)


def test_other_key_fails():
    token = sign_reconnect("c1", NOW + timedelta(days=7), KEY)
    assert not verify_reconnect(token, "c1", NOW, derive_link_key(b"other material"))


@given(st.text(max_size=300), connection_ids)
def test_garbage_text_never_raises(token: str, connection_id: str):
    assert verify_reconnect(token, connection_id, NOW, KEY) in (True, False)


@given(st.binary(min_size=0, max_size=80), connection_ids)
def test_garbage_base64_never_raises(raw: bytes, connection_id: str):
    token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    assert not verify_reconnect(token, connection_id, NOW, KEY)


def test_derived_key_is_not_the_material_and_is_deterministic():
    material = b"m" * 32
    assert derive_link_key(material) == derive_link_key(material)
    assert derive_link_key(material) != material
    assert len(derive_link_key(material)) == 32


def test_empty_key_material_is_refused():
    with pytest.raises(ValueError, match="empty"):
        derive_link_key(b"")


def test_naive_expiry_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        sign_reconnect("c1", datetime(2026, 1, 1), KEY)


def test_reconnect_url_shape():
    url = reconnect_url("https://gk.example/", "conn 1/x", "abc-_")
    assert url == "https://gk.example/connect/conn%201%2Fx?token=abc-_"
