"""trinity.urls: credentials in a URL are masked wherever a URL is shown."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinity.urls import mask_urls, shown_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:secret@127.0.0.1:8080/v1", "http://***@127.0.0.1:8080/v1"),
        ("https://token-only@llm.example/v1", "https://***@llm.example/v1"),
        ("https://me:p@ss@llm.example/v1", "https://***@llm.example/v1"),
        ("http://[::1]:11434/api/chat", "http://[::1]:11434/api/chat"),
        (
            "https://llm.example/v1?api_key=abc&model=x",
            "https://llm.example/v1?api_key=***&model=x",
        ),
        ("https://llm.example/v1?x=1&token=abc#top", "https://llm.example/v1?x=1&token=***#top"),
        ("https://h.example/?access_token=a&sig=b", "https://h.example/?access_token=***&sig=***"),
        ("https://h.example/?Password=a&secret=b", "https://h.example/?Password=***&secret=***"),
        ("http://localhost:11434", "http://localhost:11434"),
        ("https://h.example/v1?model=gpt&n=2", "https://h.example/v1?model=gpt&n=2"),
    ],
)
def test_shown_url_masks_user_info_and_key_like_query_values(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_urls_inside_a_message_are_masked_and_the_rest_is_kept() -> None:
    message = "cannot reach http://u:pw@h:1/v1 or https://k@g/v1?key=z now; mail me@example.com"
    assert mask_urls(message) == (
        "cannot reach http://***@h:1/v1 or https://***@g/v1?key=*** now; mail me@example.com"
    )


_PART = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:%@", min_size=1)


@settings(max_examples=200, database=None, deadline=None)
@given(user=_PART, password=_PART)
def test_no_user_info_survives(user: str, password: str) -> None:
    shown = shown_url(f"https://{user}:{password}@llm.example.com/v1")
    assert shown == "https://***@llm.example.com/v1"
