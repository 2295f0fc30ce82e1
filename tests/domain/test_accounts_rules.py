"""Unit tests of the account rules (hostnames, addresses, roles) and of password/secret hashing."""

from __future__ import annotations

import pytest

from smtpsettings.domain.accounts import Role, normalize_email, normalize_hostname, valid_email
from smtpsettings.domain import passwords
from smtpsettings.domain.passwords import (
    SignInSecret,
    client_password_hash,
    hash_password,
    hash_secret,
    new_api_key,
    new_client_hash_salt,
    new_token,
    password_verifiers,
    verify_password,
)

# --- normalize_hostname ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("PORTAL.example.com", "portal.example.com"),
        ("example.com:8080", "example.com"),
        ("Example.com:443", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:8080", "example.com"),
        ("  example.com  ", "example.com"),
        ("localhost", "localhost"),
        ("localhost:8080", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("a-b.c-d.example", "a-b.c-d.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("p1234567890.test", "p1234567890.test"),
        ("[::1]", "[::1]"),
        ("[::1]:8080", "[::1]"),
        ("[2001:DB8::1]:443", "[2001:db8::1]"),
    ],
)
def test_a_host_header_is_normalized_to_the_portal_name(value: str, expected: str) -> None:
    assert normalize_hostname(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        ".",
        "-example.com",
        "example-.com",
        "exa mple.com",
        "exa_mple.com",
        "example..com",
        ".example.com",
        "ex@mple.com",
        "exämple.com",
        "example.com/path",
        "::1",
        "[::1",
        "example.com\r\nX-Injected: 1",
        "a" * 64 + ".example.com",
        ".".join(["a" * 63] * 4) + ".com",
    ],
    ids=repr,
)
def test_something_that_is_not_a_hostname_normalizes_to_none(value: str) -> None:
    assert normalize_hostname(value) is None


def test_a_63_character_label_is_the_longest_accepted() -> None:
    assert normalize_hostname("a" * 63 + ".example.com") == "a" * 63 + ".example.com"
    assert normalize_hostname("a" * 64 + ".example.com") is None


def test_a_253_character_name_is_the_longest_accepted() -> None:
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 63*3 + 3 + 61 = 253
    assert len(name) == 253
    assert normalize_hostname(name) == name
    assert normalize_hostname(name + "b") is None


@pytest.mark.parametrize("value", ["[garbage]", "[]", "[not an ip]", "[1.2.3.4.5]", "[example.com]"], ids=repr)
def test_a_bracketed_literal_that_is_not_an_ipv6_address_normalizes_to_none(value: str) -> None:
    # BUG: accounts.normalize_hostname returns any "[...]" verbatim, without checking it is an IPv6 address.
    assert normalize_hostname(value) is None


# --- valid_email / normalize_email -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["user@example.com", "first.last@example.com", "user+tag@example.com", "u@sub.mail.example.org", "a@localhost", "O'Brien@Example.COM"],
)
def test_a_plain_address_is_valid(value: str) -> None:
    assert valid_email(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "user",
        "@example.com",
        "user@",
        "user@@example.com",
        "us er@example.com",
        "user@exa mple.com",
        "user@-example.com",
        "user@example..com",
        "<user@example.com>",
        "user@example.com\r\nBcc: x@evil.test",
        "l" * 65 + "@example.com",
        "l" * 64 + "@" + ".".join(["d" * 63] * 3) + ".com",  # 64 + 1 + 195 = 260 > 254
    ],
    ids=repr,
)
def test_a_malformed_address_is_invalid(value: str) -> None:
    assert not valid_email(value)


@pytest.mark.parametrize("value", ["user@example.com\n", "user@example.com\r\n"], ids=repr)
def test_an_address_with_a_trailing_newline_is_invalid(value: str) -> None:
    # BUG: the regex ends in `$`, which also matches just before a final "\n"; use fullmatch or `\Z`.
    assert not valid_email(value)


def test_an_email_is_normalized_to_lower_case_without_spaces() -> None:
    assert normalize_email("  Admin@Example.COM ") == "admin@example.com"


# --- roles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "manages"),
    [(Role.OWNER, True), (Role.ADMIN, True), (Role.USER, False), (Role.GUEST, False)],
)
def test_only_owner_and_admin_manage_settings(role: Role, manages: bool) -> None:
    assert role.manages_settings is manages


def test_roles_are_read_from_their_stored_names() -> None:
    assert [Role(name) for name in ("owner", "admin", "user", "guest")] == [Role.OWNER, Role.ADMIN, Role.USER, Role.GUEST]


# --- passwords and secrets -------------------------------------------------------------------------


def test_a_hashed_password_verifies() -> None:
    hashed = hash_password("correct horse battery")
    assert hashed != "correct horse battery"
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse battery") is True


def test_a_wrong_password_does_not_verify() -> None:
    assert verify_password(hash_password("correct horse battery"), "Correct horse battery") is False


def test_no_hash_never_verifies() -> None:
    assert verify_password(None, "anything") is False
    assert verify_password(None, "") is False


def test_a_malformed_hash_does_not_verify_and_does_not_raise() -> None:
    assert verify_password("not-a-hash", "anything") is False


def test_the_same_password_hashes_differently_each_time() -> None:
    assert hash_password("same") != hash_password("same")


def test_tokens_are_unique_and_long() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(len(t) >= 43 for t in tokens)  # 32 random bytes, base64url


def test_api_keys_start_with_sk_and_their_ids_with_key() -> None:
    keys = [new_api_key() for _ in range(50)]
    assert all(key_id.startswith("key_") and len(key_id) > len("key_") for key_id, _ in keys)
    assert all(secret.startswith("sk-") and len(secret) >= len("sk-") + 43 for _, secret in keys)
    assert len({key_id for key_id, _ in keys}) == 50
    assert len({secret for _, secret in keys}) == 50


def test_a_secret_hash_is_a_stable_sha256_hex_digest() -> None:
    assert hash_secret("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_secret("abc") != hash_secret("abd")


# --- DocSpace's client-side password hash ------------------------------------------------------------


def test_the_client_hash_is_pbkdf2_hmac_sha256_of_the_password_under_the_salt_string_in_lower_hex(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RFC 7914's PBKDF2-HMAC-SHA256 vector (P="password", S="salt", c=1, dkLen=32): the order of
    # password and salt, the salt taken as the string's bytes, the output size and the hex form.
    monkeypatch.setattr(passwords, "CLIENT_HASH_ITERATIONS", 1)
    assert client_password_hash("password", "salt") == "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"


def test_the_client_hash_uses_docspaces_default_settings() -> None:
    assert (passwords.CLIENT_HASH_SIZE, passwords.CLIENT_HASH_ITERATIONS) == (256, 100_000)
    assert len(client_password_hash("pässwörd", new_client_hash_salt())) == 64


def test_a_portal_salt_is_64_lower_hex_digits_and_new_each_time() -> None:
    salts = {new_client_hash_salt() for _ in range(10)}
    assert len(salts) == 10
    assert all(len(s) == 64 and s == s.lower() and int(s, 16) >= 0 for s in salts)


def test_the_verifiers_of_a_password_are_argon2_of_it_and_of_its_client_hash() -> None:
    salt = new_client_hash_salt()
    password_hash, client_verifier = password_verifiers("a-Secret-9", salt)
    assert verify_password(password_hash, "a-Secret-9")
    assert verify_password(client_verifier, client_password_hash("a-Secret-9", salt))
    assert not verify_password(client_verifier, "a-Secret-9")
    assert not verify_password(client_verifier, client_password_hash("a-Secret-9", new_client_hash_salt()))


def test_a_sign_in_secret_never_shows_its_value() -> None:
    for secret in (SignInSecret("hunter2-secret"), SignInSecret("abc123def", is_client_hash=True)):
        assert secret.value not in repr(secret) and secret.value not in str(secret)
