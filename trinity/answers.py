"""Turning a model's answer into a block's value: JSON found in the answer and checked
against the block's schema (a check that keeps bad answers out of the cache), the text
of an answer cut off at max_tokens trimmed, and Markdown or text made safe HTML.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from trinity.errors import MalformedResponseError
from trinity.llm.trim import trim_truncated
from trinity.llm.types import LLMResponse
from trinity.render.markdown import render_markdown, render_text
from trinity.site import Block

if TYPE_CHECKING:
    import jsonschema

_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL)


def _json_candidates(text: str) -> Iterator[str]:
    """The whole answer, then any fenced block in it, then its outermost {...} or [...]."""
    yield text
    yield from (match.group(1) for match in _FENCE.finditer(text))
    for opening, closing in (("{", "}"), ("[", "]")):
        start, end = text.find(opening), text.rfind(closing)
        if 0 <= start < end:
            yield text[start : end + 1]


def parse_json_answer(text: str, schema: Mapping[str, Any] | None) -> Any:
    """The data in a json block's answer; MalformedResponseError if it has none.

    Chat models often wrap JSON in a code fence or a sentence of introduction, so the
    first candidate in the answer that parses is taken.
    """
    for candidate in _json_candidates(text):
        try:
            data = json.loads(candidate)
            break
        except json.JSONDecodeError:
            continue
    else:
        excerpt = " ".join(text.split())[:80]
        raise MalformedResponseError(f"the answer is not valid JSON: {excerpt!r}")
    if schema is not None:
        import jsonschema  # here: slow to import, and few sites have json blocks

        error = jsonschema.exceptions.best_match(_schema_validator(schema).iter_errors(data))
        if error is not None:
            raise MalformedResponseError(
                f"the answer does not match the block's schema: {error.message}"
            )
    return data


@functools.lru_cache(maxsize=256)
def _compiled_schema(schema_json: str) -> jsonschema.protocols.Validator:
    import jsonschema

    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def _schema_validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    # Checked when the site loaded; compiled once per distinct schema.
    return _compiled_schema(json.dumps(schema, sort_keys=True))


def answer_validator(block: Block) -> Callable[[LLMResponse], None] | None:
    """For json blocks, a check that refuses (and so never caches) answers that do not parse."""
    if block.format != "json":
        return None

    def validate(response: LLMResponse) -> None:
        if response.truncated:
            # Even if what came back parses, it is not all the model meant to say.
            raise MalformedResponseError(
                f"the answer was cut off after {response.usage.output_tokens} tokens; "
                "raise the block's max_tokens"
            )
        parse_json_answer(response.text, block.schema)

    return validate


def published_text(block: Block, response: LLMResponse) -> str:
    """The answer a block shows: cut off at max_tokens, by any provider, it ends where it
    last made sense (trim_truncated); a json block's never is (its validator refuses it).

    Trimmed here, as the page is made, rather than before caching: the cache keeps what
    the model said and that it was cut off, so every rebuild from the cache trims by the
    current rule, answers cached before it included, and a better rule costs no model call.
    """
    if response.truncated and block.format != "json":
        return trim_truncated(response.text)
    return response.text


def block_value(block: Block, text: str) -> Any:
    """What a template sees for a block: safe HTML, or the parsed data of a json block."""
    if block.format == "json":
        return parse_json_answer(text, block.schema)
    if block.format == "text":
        return render_text(text)
    return render_markdown(text)
