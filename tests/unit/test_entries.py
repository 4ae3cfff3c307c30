"""llm.entries: one key exactly for the same question to the same model, never the API key."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinity.llm.client import AsyncLLMClient
from trinity.llm.entries import KEY_VERSION, cache_key, request_fingerprint
from trinity.llm.settings import LLMSettings
from trinity.llm.types import CompletionFrame, LLMRequest

FAST = settings(max_examples=150, database=None, deadline=None)

# Small pools, so that two independent draws are often equal in some or all fields.
OPTION_VALUES = st.one_of(st.integers(-2, 2), st.sampled_from(["a", "b", ""]), st.none())
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["llama3", "llama3:8b", "gpt-x"]),
    "system": st.sampled_from([None, "Be brief.", "Be long."]),
    "prompt": st.sampled_from(["Hi", "hi", "Hi ", "Über"]),
    "temperature": st.sampled_from([0, 0.0, 0.5, 0.7, 1, 2.0]),
    "max_tokens": st.sampled_from([1, 256, 512]),
    "top_p": st.sampled_from([None, 0.5, 1.0]),
    "response_format": st.sampled_from(["text", "json"]),
    "json_schema": st.sampled_from([None, {"type": "object"}, {"type": "array"}]),
    "options": st.dictionaries(st.sampled_from(["seed", "num_ctx"]), OPTION_VALUES, max_size=2),
    # What a base model continues: the document, the answer's opening words, where it stops.
    "frame": st.one_of(
        st.none(),
        st.builds(
            CompletionFrame,
            st.sampled_from(["# Home\n\n", "# About\n\n"]),
            lead=st.sampled_from(["", "The"]),
            stop=st.sampled_from([(), ("\n\n",), ("\n\n", "<"), ("<", "\n\n")]),
        ),
    ),
}
PARAMS = st.fixed_dictionaries(FIELDS)


def make(params: dict[str, Any]) -> LLMRequest:
    params = dict(params)
    return LLMRequest.from_prompt(params.pop("prompt"), **params)


def relevant(request: LLMRequest) -> tuple[Any, ...]:
    """The fields that should decide the key, compared as plain Python values."""
    return (
        request.model,
        request.messages,
        float(request.temperature),
        request.max_tokens,
        request.top_p,
        request.response_format,
        None if request.json_schema is None else dict(request.json_schema),
        dict(request.options),
        request.document,
        request.lead,
        request.stop,
    )


def key(request: LLMRequest, provider: str = "ollama", base_url: str = "http://h:1") -> str:
    return cache_key(provider, base_url, request)


@FAST
@given(PARAMS, PARAMS)
def test_key_is_equal_exactly_when_the_relevant_fields_are(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    first, second = make(a), make(b)
    assert (key(first) == key(second)) == (relevant(first) == relevant(second))


@FAST
@given(PARAMS, st.sampled_from(sorted(FIELDS)), st.data())
def test_changing_one_field_changes_the_key_unless_the_value_is_the_same(
    params: dict[str, Any], field: str, data: st.DataObject
) -> None:
    changed = {**params, field: data.draw(FIELDS[field])}
    first, second = make(params), make(changed)
    assert (key(first) == key(second)) == (relevant(first) == relevant(second))


@FAST
@given(PARAMS)
def test_key_shape_and_determinism(params: dict[str, Any]) -> None:
    request = make(params)
    value = key(request)
    assert re.fullmatch(rf"v{KEY_VERSION}:[0-9a-f]{{64}}", value)
    assert key(make(dict(params))) == value


def test_option_order_does_not_matter() -> None:
    a = make({**BASE, "options": {"seed": 1, "num_ctx": 2}})
    b = make({**BASE, "options": {"num_ctx": 2, "seed": 1}})
    assert key(a) == key(b)


BASE: dict[str, Any] = {
    "model": "m",
    "system": None,
    "prompt": "p",
    "temperature": 0.5,
    "max_tokens": 10,
}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(("ollama", "http://h:1"), ("openai", "http://h:1"), id="provider"),
        pytest.param(("ollama", "http://h:1"), ("ollama", "http://h:2"), id="port"),
        pytest.param(("ollama", "http://a"), ("ollama", "http://b"), id="host"),
        pytest.param(("openai", "http://h/v1"), ("openai", "http://h"), id="path"),
    ],
)
def test_key_depends_on_provider_and_base_url(a: tuple[str, str], b: tuple[str, str]) -> None:
    request = make(BASE)
    assert key(request, *a) != key(request, *b)


@pytest.mark.parametrize("suffix", ["/", "//"])
def test_trailing_slash_of_base_url_is_irrelevant(suffix: str) -> None:
    request = make(BASE)
    assert key(request, "ollama", "http://h:1") == key(request, "ollama", "http://h:1" + suffix)


def test_system_prompt_is_part_of_the_key() -> None:
    assert key(make(BASE)) != key(make({**BASE, "system": "Be brief."}))


def test_fingerprint_holds_no_api_key_field() -> None:
    fingerprint = request_fingerprint("openai", "https://x/", make(BASE))
    assert fingerprint["base_url"] == "https://x"
    assert not {name for name in fingerprint if "key" in name or "auth" in name}


def test_frame_fields_are_part_of_the_key() -> None:
    plain = make(BASE)
    framed = make({**BASE, "frame": CompletionFrame("# Home\n\n")})
    keys = {
        key(plain),
        key(framed),
        key(make({**BASE, "frame": CompletionFrame("# About\n\n")})),
        key(make({**BASE, "frame": CompletionFrame("# Home\n\n", lead="The")})),
        key(make({**BASE, "frame": CompletionFrame("# Home\n\n", stop=("\n\n",))})),
    }
    assert len(keys) == 5
    fingerprint = request_fingerprint("local", "", framed)
    assert (fingerprint["document"], fingerprint["lead"], fingerprint["stop"]) == (
        "# Home\n\n",
        "",
        [],
    )


def test_unserialisable_option_is_refused() -> None:
    request = make({**BASE, "options": {"seed": object()}})
    with pytest.raises(TypeError, match="cannot put object in a cache key"):
        key(request)


# ---------------------------------------------------------------------------- through the client


@pytest.mark.parametrize("provider", ["ollama", "openai"])
def test_api_key_is_never_an_input(provider: str) -> None:
    settings_a = LLMSettings(provider=provider, api_url="http://h:1", api_key="sk-AAAA")
    settings_b = LLMSettings(provider=provider, api_url="http://h:1", api_key="sk-BBBB")
    settings_c = LLMSettings(provider=provider, api_url="http://h:1", api_key=None)
    keys = set()
    for s in (settings_a, settings_b, settings_c):
        client = AsyncLLMClient(s)
        keys.add(client.key(client.request("p")))
    assert len(keys) == 1


def test_client_key_changes_with_provider_and_url() -> None:
    base = LLMSettings(provider="ollama", api_url="http://h:1")
    others = [
        LLMSettings(provider="openai", api_url="http://h:1"),
        LLMSettings(provider="ollama", api_url="http://h:2"),
    ]
    client = AsyncLLMClient(base)
    request = client.request("p")
    for other in others:
        assert AsyncLLMClient(other).key(request) != client.key(request)
    same = LLMSettings(provider="ollama", api_url="http://h:1/")
    assert AsyncLLMClient(same).key(request) == client.key(request)


@pytest.mark.parametrize(
    "explicit",
    [
        pytest.param({"temperature": 0.3}, id="temperature"),
        pytest.param({"max_tokens": 99}, id="max_tokens"),
        pytest.param({"top_p": 0.9}, id="top_p"),
        pytest.param({"temperature": 0.3, "max_tokens": 99, "top_p": 0.9}, id="all"),
    ],
)
def test_omitted_parameter_and_explicit_default_give_one_key(explicit: dict[str, Any]) -> None:
    settings_ = LLMSettings(temperature=0.3, max_tokens=99, top_p=0.9, options={"seed": 1})
    client = AsyncLLMClient(settings_)
    implicit = client.request("p")
    spelled_out = client.request("p", **explicit)
    assert implicit == spelled_out
    assert client.key(implicit) == client.key(spelled_out)


def test_integer_temperature_equals_its_float() -> None:
    client = AsyncLLMClient(LLMSettings(temperature=1.0))
    assert client.key(client.request("p")) == client.key(client.request("p", temperature=1))


def test_client_request_differs_when_a_parameter_differs_from_settings() -> None:
    client = AsyncLLMClient(LLMSettings(temperature=0.3))
    assert client.key(client.request("p")) != client.key(client.request("p", temperature=0.4))


def test_settings_options_reach_the_request_and_the_key() -> None:
    http = {"provider": "ollama", "api_url": "http://h:1"}
    with_seed = AsyncLLMClient(LLMSettings(**http, options={"seed": 1}))
    without = AsyncLLMClient(LLMSettings(**http))
    assert dict(with_seed.request("p").options) == {"seed": 1}
    assert with_seed.key(with_seed.request("p")) != without.key(without.request("p"))


def test_a_key_is_the_same_in_every_version_of_the_code() -> None:
    """Pinned: a change to the key's recipe must bump KEY_VERSION, never reuse it, or every
    cache in use would serve answers to other questions (or miss them all silently)."""
    request = LLMRequest.from_prompt(
        "Write about Lumen.",
        model="writer",
        system="Be brief.",
        temperature=0.7,
        max_tokens=256,
        top_p=0.9,
        response_format="json",
        json_schema={"type": "object"},
        options={"seed": 7},
        frame=CompletionFrame("# Home\n\n", lead="The", stop=("\n\n",)),
    )

    assert cache_key("openai", "https://api.example.com/", request) == (
        "v1:c63ff83d36ed9b87a90ef1369a0c21ca7e247376d891f2aa20c10a432ddf40cf"
    )
