"""The build's helpers: parsing json answers and block values (answers), page roots
(pages), system prompts and job planning (plan), and the report's JSON (report)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup

from tests.unit.conftest import ProjectFactory
from trinity.answers import block_value, parse_json_answer, published_text
from trinity.errors import MalformedResponseError
from trinity.llm.client import AsyncLLMClient
from trinity.llm.types import LLMResponse
from trinity.pages import page_root
from trinity.plan import plan_jobs, system_prompt
from trinity.project import prepare
from trinity.report import BlockResult, BuildReport
from trinity.site import Block, Page

SCHEMA = {
    "type": "object",
    "required": ["highlights"],
    "properties": {"highlights": {"type": "array", "items": {"type": "string"}}},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"a": 1}', {"a": 1}, id="plain"),
        pytest.param("  [1, 2]\n", [1, 2], id="whitespace"),
        pytest.param('```json\n{"a": 1}\n```', {"a": 1}, id="fenced-json"),
        pytest.param('```\n{"a": 1}\n```\n', {"a": 1}, id="fenced-bare"),
        pytest.param('\n```JSON\n{\n  "a": [1,\n 2]\n}\n```  \n', {"a": [1, 2]}, id="multiline"),
        pytest.param('"just a string"', "just a string", id="string"),
    ],
)
def test_parse_json_answer(text: str, expected: Any) -> None:
    assert parse_json_answer(text, None) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="prose"),
        pytest.param('{"a": 1,\n}', id="trailing-comma"),
        pytest.param("", id="empty"),
        pytest.param("{ unclosed [", id="unclosed"),
    ],
)
def test_invalid_json_answer(text: str) -> None:
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        parse_json_answer(text, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'Here is the JSON:\n```json\n{"a": 1}\n```\nEnjoy!', {"a": 1}, id="prose+fence"
        ),
        pytest.param('```json\n{"a": 1}\n``` and more', {"a": 1}, id="text-after-fence"),
        pytest.param('Sure! {"a": [1, 2]} Hope it helps.', {"a": [1, 2]}, id="prose+object"),
        pytest.param("The list: [1, 2]", [1, 2], id="prose+array"),
    ],
)
def test_json_is_found_inside_chatty_answers(text: str, expected: Any) -> None:
    assert parse_json_answer(text, None) == expected


def test_invalid_json_message_quotes_the_answer() -> None:
    with pytest.raises(MalformedResponseError, match="'I cannot do that'"):
        parse_json_answer("I cannot\n do that", None)


def test_schema_match_and_mismatch() -> None:
    assert parse_json_answer('{"highlights": ["a", "b"]}', SCHEMA) == {"highlights": ["a", "b"]}
    with pytest.raises(MalformedResponseError, match="does not match the block's schema"):
        parse_json_answer('{"highlights": [1]}', SCHEMA)
    with pytest.raises(MalformedResponseError, match="'highlights' is a required property"):
        parse_json_answer("{}", SCHEMA)


def test_schema_key_order_does_not_matter() -> None:
    reordered = dict(reversed(list(SCHEMA.items())))
    with pytest.raises(MalformedResponseError):
        parse_json_answer("{}", reordered)
    assert parse_json_answer('{"highlights": []}', reordered) == {"highlights": []}


def page(slug: str) -> Page:
    return Page(slug=slug, title="t", template="page.html", blocks=())


@pytest.mark.parametrize(
    ("slug", "root"),
    [("index", ""), ("about", "../"), ("projects/x", "../../"), ("a/b/c", "../../../")],
)
def test_page_root(slug: str, root: str) -> None:
    assert page_root(page(slug)) == root


@pytest.mark.parametrize("slug", ["index", "about", "projects/x", "a/b/c"])
def test_page_root_leads_back_to_the_site_root(slug: str) -> None:
    folder = Path("/site") / page(slug).output_path
    assert (folder.parent / page_root(page(slug))).resolve() == Path("/site").resolve()


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((None, None, None), None),
        (("", "  ", "\n"), None),
        (("Site.", None, None), "Site."),
        ((None, "Voice.", "Block."), "Voice.\n\nBlock."),
        ((" Site. ", "\nVoice.\n", "Block."), "Site.\n\nVoice.\n\nBlock."),
        ((), None),
    ],
)
def test_system_prompt(parts: tuple[str | None, ...], expected: str | None) -> None:
    assert system_prompt(*parts) == expected


@pytest.mark.parametrize(
    ("block_format", "text", "expected"),
    [
        ("markdown", "# Hi", Markup("<h2>Hi</h2>\n")),
        ("text", "a <b>", Markup("<p>a &lt;b&gt;</p>")),
        ("json", '{"a": 1}', {"a": 1}),
    ],
)
def test_block_value(block_format: str, text: str, expected: Any) -> None:
    assert block_value(Block(name="b", prompt="p", format=block_format), text) == expected


CUT_OFF = "Three things:\n\n1. Metrics nobody reads are noise.\n2. Alerts need an owner.\n3."


@pytest.mark.parametrize(
    ("block_format", "finish_reason", "expected"),
    [
        pytest.param("markdown", "length", CUT_OFF.removesuffix("3."), id="markdown-cut-off"),
        pytest.param("text", "length", CUT_OFF.removesuffix("3."), id="text-cut-off"),
        pytest.param("json", "length", CUT_OFF, id="json-never"),
        pytest.param("markdown", "stop", CUT_OFF, id="finished"),
        pytest.param("markdown", None, CUT_OFF, id="no-finish-reason"),
    ],
)
def test_published_text_trims_only_a_cut_off_prose_answer(
    block_format: str, finish_reason: str | None, expected: str
) -> None:
    block = Block(name="b", prompt="p", format=block_format)
    response = LLMResponse(text=CUT_OFF, model="m", finish_reason=finish_reason)
    assert published_text(block, response) == expected


def test_plan_jobs_resolves_every_request(project: ProjectFactory) -> None:
    # Chat style: a base model (the default) is sent no messages, so no system prompt.
    project.settings_file(
        "site: {title: T}\n"
        "llm: {style: chat, system: Site rules., temperature: 0.4, max_tokens: 100}\n"
    )
    project.pages(
        [
            {
                "slug": "index",
                "title": "H",
                "blocks": {
                    "plain": "Write.",
                    "data": {
                        "prompt": "List.",
                        "format": "json",
                        "schema": SCHEMA,
                        "temperature": 0.1,
                        "max_tokens": 20,
                        "system": "JSON only.",
                    },
                },
            }
        ]
    )
    prepared = prepare(project.root, environ={})
    client = AsyncLLMClient(prepared.settings.llm)
    plain, data = plan_jobs(prepared, client)
    voice = prepared.theme.voice
    assert voice

    assert plain.request.messages[0].content == f"Site rules.\n\n{voice}"
    assert (plain.request.temperature, plain.request.max_tokens) == (0.4, 100)
    assert plain.request.response_format == "text"
    assert plain.request.json_schema is None

    assert data.request.messages[0].content == f"Site rules.\n\n{voice}\n\nJSON only."
    assert (data.request.temperature, data.request.max_tokens) == (0.1, 20)
    assert data.request.response_format == "json"
    assert data.request.json_schema == SCHEMA
    assert data.key == client.key(data.request)
    assert plain.key != data.key


@pytest.mark.parametrize("blocks", [0, 1, 3])
def test_the_report_json_reads_back_as_the_report_with_a_block_to_a_line(blocks: int) -> None:
    report = BuildReport("/site", "/site/output", "minimal", "openai", "gpt-é", pages=2)
    report.timings = {"plan": 0.5, "total": 1.25}
    report.blocks = [
        BlockResult(page=f"p{n}", block="summary", source="cache", error='naïve "quote"\n')
        for n in range(blocks)
    ]
    stream = io.StringIO()

    report.write_json(stream)

    text = stream.getvalue()
    assert json.loads(text) == json.loads(json.dumps(report.to_dict()))
    block_lines = [line for line in text.splitlines() if line.startswith('    {"page"')]
    assert len(block_lines) == blocks
