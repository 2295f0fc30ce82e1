"""Names of the failed-sign-in counters, and the key id an API key carries at its front."""

from __future__ import annotations

import pytest

from smtpsettings.domain.lockouts import bucket, parse_bucket
from smtpsettings.domain.passwords import api_key_id_of, new_api_key


def test_a_new_key_names_its_own_id_and_a_secret_of_its_own() -> None:
    (id1, key1), (id2, key2) = new_api_key(), new_api_key()
    assert (api_key_id_of(key1), api_key_id_of(key2)) == (id1, id2)
    assert id1 != id2 and len(key1.split(".", 1)[1]) >= 43


@pytest.mark.parametrize(
    "key",
    [
        "sk-" + "A" * 43,  # a key from before keys carried their id
        "sk-0123456789ab",  # no secret part
        "sk-0123456789AB.secret",  # not lower-case hex
        "sk-0123456789a.secret",  # too short
        "0123456789ab.secret",  # not a key
        "",
    ],
)
def test_anything_else_names_no_key(key: str) -> None:
    assert api_key_id_of(key) is None


@pytest.mark.parametrize(
    ("kind", "subject", "name"),
    [
        ("http-account", "3:ann@one.test", "login:account:3:ann@one.test"),
        ("http-address", "2001:db8:1:2::9", "login:address:2001:db8:1:2::/64"),
        ("smtp-address", "2001:db8:1:2::9", "smtp:address:2001:db8:1:2::/64"),
        ("smtp-address", "::ffff:192.0.2.1", "smtp:address:192.0.2.1"),
        ("smtp-key", "key_0123456789ab", "smtp:key:key_0123456789ab"),
    ],
)
def test_each_channel_has_buckets_of_its_own_and_they_read_back(kind: str, subject: str, name: str) -> None:
    assert bucket(kind, subject) == name  # type: ignore[arg-type]
    assert parse_bucket(name) == (kind, name.split(":", 2)[2])


def test_other_counters_are_no_lockouts() -> None:
    assert parse_bucket("outbox:portal:1") is None and parse_bucket("smtptest:user:1") is None
