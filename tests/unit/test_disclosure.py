"""What may leave the process: annotations on an allow-list, no credential-like key ever."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.disclosure import (
    DEFAULT,
    DEFAULT_ANNOTATIONS,
    Disclosure,
    DisclosureError,
    looks_like_credential,
    without_credentials,
)


@pytest.mark.parametrize(
    "key",
    [
        "gitpod/ownerToken", "x-api-key", "db_password", "AWS_SECRET_ACCESS_KEY", "HTTPAuth",
        "sshKey", "example.com/session-cookie", "registry.auth", "kubeconfig", "jwt",
        "vault.hashicorp.com/agent-inject-token", "credentials.json", "apikey",
    ],
)  # fmt: skip
def test_credential_like_keys(key: str) -> None:
    assert looks_like_credential(key)
    assert not Disclosure.with_extra([key[:1] + "*"]).allows(key)  # not even by a prefix


@pytest.mark.parametrize(
    "key",
    [*DEFAULT_ANNOTATIONS, "monkey", "authorName", "gitpod/contentInitializer", "app", "tokenize"],
)
def test_harmless_keys(key: str) -> None:
    assert not looks_like_credential(key)


def test_default_allows_only_its_list() -> None:
    values = {
        "io.kubernetes.container.restartCount": "0",
        "gitpod/id": "ws-1",
        "gitpod/ownerToken": "s3cr3t",
        "gitpod/contentInitializer": "Cg8...",  # carries git credentials: not on the list
        "example.com/team": "a",
    }
    assert DEFAULT.annotations(values) == {
        "io.kubernetes.container.restartCount": "0",
        "gitpod/id": "ws-1",
    }


def test_extra_keys_and_prefixes() -> None:
    d = Disclosure.with_extra(["example.com/*", "team"])
    values = {"example.com/a": "1", "example.com/apiKey": "k", "team": "t", "teams": "x"}
    assert d.annotations(values) == {"example.com/a": "1", "team": "t"}
    assert d.allows("gitpod/id")  # the defaults stay
    assert not Disclosure.with_extra(["team"], defaults=False).allows("gitpod/id")


@pytest.mark.parametrize("entry", ["", " ", "*", "a*b", "gitpod/ownerToken", "x-api-key*"])
def test_bad_entries(entry: str) -> None:
    with pytest.raises(DisclosureError):
        Disclosure.with_extra([entry])


def test_labels_lose_credential_keys_only() -> None:
    assert without_credentials({"app": "x", "token": "t", "owner": "o"}) == {
        "app": "x",
        "owner": "o",
    }


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=10)), st.lists(st.text(max_size=8)))
def test_nothing_credential_like_is_ever_allowed(values: dict[str, str], extra: list[str]) -> None:
    try:
        d = Disclosure.with_extra(extra)
    except DisclosureError:
        d = DEFAULT
    shown = d.annotations(values)
    assert set(shown) <= set(values)
    assert not any(looks_like_credential(k) for k in shown)
