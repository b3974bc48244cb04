"""The one redactor: known secrets and every URL password become ***."""

from __future__ import annotations

import pytest

from bridge.core.redaction import Redactor, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://pb:s3cret@db:5432/pb", "postgresql://pb:***@db:5432/pb"),
        ("postgresql://pb:p%40ss@db/pb", "postgresql://pb:***@db/pb"),
        ("https://user:pw@h.example/x?q=1", "https://user:***@h.example/x?q=1"),
        ("https://h.example/x", "https://h.example/x"),
        ("https://user@h.example/x", "https://user@h.example/x"),  # no password to hide
        ("/var/lib/pollbridge/pollbridge.db", "/var/lib/pollbridge/pollbridge.db"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, expected: str) -> None:
    """The user name and the rest stay readable; the password never does."""
    assert redact_url(url) == expected


def test_redactor_hides_secrets_longest_first() -> None:
    """A secret containing another is replaced whole; values under four characters are kept."""
    redactor = Redactor(["abcd", "abcdefgh", "xy"])
    assert redactor("key abcdefgh, part abcd, short xy") == "key ***, part ***, short xy"
    assert redactor.secrets == frozenset({"abcd", "abcdefgh"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "no state yet at postgresql://postgres:hunter2@10.0.0.5/pb",
            "no state yet at postgresql://postgres:***@10.0.0.5/pb",
        ),
        ("at postgresql://u:p@ss@db/pb now", "at postgresql://u:***@db/pb now"),
        ("GET http://h.example:8080/a@b", "GET http://h.example:8080/a@b"),
        ("two: http://a:x1@h/ and https://b:y2@k/", "two: http://a:***@h/ and https://b:***@k/"),
    ],
)
def test_redactor_hides_every_url_password_in_free_text(text: str, expected: str) -> None:
    """Even a password nobody declared (a URL in an error message) is hidden, up to the last
    "@" of the authority, so an unencoded "@" in it cannot leak its tail."""
    assert Redactor()(text) == expected


def test_with_secrets_adds_to_a_redactor() -> None:
    """A reload's new secrets join the old ones: both stay hidden."""
    old = Redactor(["old-secret"])
    both = old.with_secrets(["new-secret"])
    assert both("old-secret new-secret") == "*** ***"
    assert old("new-secret") == "new-secret"
