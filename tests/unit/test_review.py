"""The requests trinity.review makes to ask again, and the shape of a request by the
provider of the model it goes to (trinity.llm.requests)."""

from __future__ import annotations

from types import MappingProxyType

from trinity.checks.correction import correction
from trinity.checks.spec import CheckFailure, CheckSpec, LinkRule, Range
from trinity.llm.requests import RequestMaker
from trinity.llm.settings import LLMSettings, Target
from trinity.llm.types import CompletionFrame, LLMRequest, Message
from trinity.review import MIN_REASK_TOKENS, checks_run, reask_request

FRAME = CompletionFrame("Mara\n\n## Intro\n\nHello, I", lead="Hello, I", stop=("\n\n",))
FAILED = [CheckFailure("words", "212 words; at most 120")]
# The embedded base model, with a cascade step to a chat model on an Ollama server.
BASE = LLMSettings(
    provider="local",
    style="completion",
    max_tokens=100,
    aliases=MappingProxyType(
        {"strong": Target("ollama", "llama3.2"), "tiny": Target("local", "x")}
    ),
)


def test_a_chat_model_gets_its_answer_back_and_the_failed_checks() -> None:
    request = RequestMaker(LLMSettings(provider="ollama")).request(
        "Write a bio.", system="Be kind."
    )

    again = reask_request(request, "A long bio.", FAILED)
    twice = reask_request(again, "Still long.", FAILED)

    assert again.messages == (
        *request.messages,
        Message("assistant", "A long bio."),
        Message("user", correction(FAILED)),
    )
    assert twice.messages[: len(again.messages)] == again.messages
    assert len(twice.messages) == len(request.messages) + 4
    assert (twice.max_tokens, twice.options) == (request.max_tokens, request.options)


def test_a_base_model_is_sampled_again_with_the_next_seed_and_a_tighter_budget() -> None:
    request = RequestMaker(BASE).request("Write a bio.", frame=FRAME)
    assert request.document is not None and request.options["seed"] == 0

    again = reask_request(request, "A long bio.", FAILED)
    twice = reask_request(again, "Still long.", FAILED)

    assert (again.options["seed"], again.max_tokens) == (1, 80)
    assert (twice.options["seed"], twice.max_tokens) == (2, 64)
    assert (twice.messages, twice.document) == (request.messages, request.document)
    assert twice.options["repeat_penalty"] == request.options["repeat_penalty"]


def test_a_base_model_budget_never_shrinks_below_the_floor_nor_grows() -> None:
    request = LLMRequest("m", (), 0.7, 18, document="doc")
    assert reask_request(request, "x", FAILED).max_tokens == MIN_REASK_TOKENS
    small = LLMRequest("m", (), 0.7, 4, document="doc")
    assert reask_request(small, "x", FAILED).max_tokens == 4


def test_a_cascade_step_to_a_server_model_is_a_chat_request() -> None:
    maker = RequestMaker(BASE)

    embedded = maker.request("Write a bio.", system="Be kind.", frame=FRAME)
    also_embedded = maker.request("Write a bio.", model="tiny", frame=FRAME)
    served = maker.request("Write a bio.", system="Be kind.", model="strong", frame=FRAME)

    assert (embedded.document, embedded.messages) == (FRAME.document, ())
    assert also_embedded.document == FRAME.document
    assert served.document is None and served.stop == ()
    assert served.messages == (Message("system", "Be kind."), Message("user", "Write a bio."))
    # The embedded model's sampling defaults are its own, not the server's.
    assert "repeat_penalty" in embedded.options
    assert dict(served.options) == {}


def test_the_checks_run_are_named_as_they_are_spelled() -> None:
    assert checks_run(CheckSpec(), "markdown", judged=False) == ["complete", "forbid", "repeats"]
    spec = CheckSpec(
        words=Range(max=120),
        chars=Range(max=900),
        complete=False,
        mentions=("Python",),
        boilerplate=False,
        links=LinkRule(),
        pii="redact",
        repeats=False,
    )
    assert checks_run(spec, "markdown", judged=True) == [
        "words",
        "chars",
        "mentions",
        "links",
        "pii",
        "judge",
    ]
    # A json block's answer is data: only forbid and pii run on its text, then its schema.
    assert checks_run(spec, "json", judged=True) == ["pii", "json", "judge"]
