"""Encryption at rest: round trips, key rotation, tamper and misplacement detection, secret-free errors."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.adapters.crypto import DecryptionError, Keyring, KeyringError, generate_key_line

AAD = "connections:con_0123456789abcdef0123:refresh_token"


def _key(fill: int) -> str:
    return base64.urlsafe_b64encode(bytes([fill]) * 32).decode().rstrip("=")


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse(generate_key_line("k1"))


def test_encrypt_then_decrypt_returns_the_plaintext(keyring: Keyring) -> None:
    stored = keyring.encrypt("rt-secret-value", aad=AAD)

    assert keyring.decrypt(stored, aad=AAD) == "rt-secret-value"


def test_stored_value_has_versioned_format_with_key_id_and_no_plaintext(keyring: Keyring) -> None:
    stored = keyring.encrypt("rt-secret-value", aad=AAD)

    assert re.fullmatch(r"gk1:k1:[A-Za-z0-9_-]+", stored)
    assert "rt-secret-value" not in stored


def test_encrypting_twice_gives_different_ciphertexts(keyring: Keyring) -> None:
    assert keyring.encrypt("same", aad=AAD) != keyring.encrypt("same", aad=AAD)


def test_rotation_new_values_use_first_key_and_old_values_still_decrypt() -> None:
    old_line = generate_key_line("old")
    old = Keyring.parse(old_line)
    written_before_rotation = old.encrypt("before", aad=AAD)

    rotated = Keyring.parse(f"{generate_key_line('new')},{old_line}")

    assert rotated.primary_kid == "new"
    assert rotated.decrypt(written_before_rotation, aad=AAD) == "before"
    assert rotated.encrypt("after", aad=AAD).startswith("gk1:new:")


def test_value_under_a_removed_key_fails_with_unknown_key_id(keyring: Keyring) -> None:
    other = Keyring.parse(generate_key_line("gone"))

    with pytest.raises(DecryptionError, match="unknown key id 'gone'"):
        keyring.decrypt(other.encrypt("x", aad=AAD), aad=AAD)


@pytest.mark.parametrize("position", [0, 5, 20, -1])
def test_tampered_ciphertext_fails_to_decrypt(keyring: Keyring, position: int) -> None:
    prefix, kid, encoded = keyring.encrypt("rt-secret-value", aad=AAD).split(":")
    blob = bytearray(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    blob[position] ^= 0x01
    tampered = f"{prefix}:{kid}:{base64.urlsafe_b64encode(bytes(blob)).decode().rstrip('=')}"

    with pytest.raises(DecryptionError):
        keyring.decrypt(tampered, aad=AAD)


@pytest.mark.parametrize("stored", ["", "plain", "gk1:k1", "gk0:k1:AAAA", "gk1:k1:!!!!", "gk1:k1:AAAA"])
def test_malformed_stored_value_fails_to_decrypt(keyring: Keyring, stored: str) -> None:
    with pytest.raises(DecryptionError):
        keyring.decrypt(stored, aad=AAD)


def test_wrong_aad_fails_to_decrypt(keyring: Keyring) -> None:
    stored = keyring.encrypt("rt-secret-value", aad=AAD)

    with pytest.raises(DecryptionError, match="failed authentication"):
        keyring.decrypt(stored, aad="connections:con_0123456789abcdef0123:access_token")


def test_value_copied_to_another_row_fails_to_decrypt(keyring: Keyring) -> None:
    stored = keyring.encrypt("rt-secret-value", aad="connections:con_aaaaaaaaaaaaaaaaaaaa:refresh_token")

    with pytest.raises(DecryptionError):
        keyring.decrypt(stored, aad="connections:con_bbbbbbbbbbbbbbbbbbbb:refresh_token")


def test_decryption_error_message_holds_neither_key_nor_plaintext() -> None:
    line = generate_key_line("k1")
    keyring = Keyring.parse(line)
    stored = keyring.encrypt("rt-secret-value", aad=AAD)

    with pytest.raises(DecryptionError) as caught:
        keyring.decrypt(stored, aad="elsewhere")

    assert line.split(":")[1] not in str(caught.value)
    assert "rt-secret-value" not in str(caught.value)


def test_keyring_repr_shows_key_ids_only() -> None:
    line = generate_key_line("k1")

    assert repr(Keyring.parse(line)) == "Keyring(kids=['k1'])"


def test_parse_accepts_padding_whitespace_and_several_keys() -> None:
    keyring = Keyring.parse(f" a:{_key(1)}= , b:{_key(2)},")

    assert keyring.kids == ("a", "b")
    assert keyring.primary_kid == "a"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "holds no key"),
        (" , ", "holds no key"),
        (_key(7), "entry 1 is not of the form KID:KEY"),
        (f"a:{_key(7)},:{_key(8)}", "entry 2 is not of the form KID:KEY"),
        (f"bad kid:{_key(7)}", "key id must be"),
        ("short:" + base64.urlsafe_b64encode(b"\x07" * 16).decode(), "must decode to 32 bytes, got 16"),
        ("junk:" + "*" * 43, "not valid base64url"),
        (f"a:{_key(7)},a:{_key(8)}", "key id 'a' twice"),
    ],
)
def test_parse_rejects_bad_configuration_without_echoing_key_material(value: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as caught:
        Keyring.parse(value)

    for key in (_key(7), _key(8), "*" * 43):
        assert key not in str(caught.value)


def test_keyring_error_is_a_value_error() -> None:
    assert issubclass(KeyringError, ValueError)


def test_generate_key_line_default_kid_is_dated_and_key_is_32_bytes() -> None:
    kid, key = generate_key_line().split(":")

    assert re.fullmatch(r"k\d{8}[0-9a-f]{4}", kid)
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 32
    assert Keyring.parse(f"{kid}:{key}").primary_kid == kid


def test_generate_key_line_gives_a_fresh_key_each_time() -> None:
    assert generate_key_line("k").split(":")[1] != generate_key_line("k").split(":")[1]


def test_generate_key_line_rejects_a_kid_that_would_break_the_format() -> None:
    with pytest.raises(KeyringError):
        generate_key_line("a:b")


@given(plaintext=st.text(), aad=st.text())
def test_round_trip_for_any_text_and_aad(plaintext: str, aad: str) -> None:
    keyring = Keyring.parse(f"k1:{_key(3)}")

    assert keyring.decrypt(keyring.encrypt(plaintext, aad=aad), aad=aad) == plaintext
