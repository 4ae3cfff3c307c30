"""trinity.build_site (the library way in) against the fake LLM server: what reaches the
wire, how the environment and settings shape it, the cache, observers and themes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sitekit import BLOCKS, MODEL, PAGES, SiteProject
from tests.fakellm import OLLAMA_CHAT_PATH, OPENAI_CHAT_PATH, RecordedRequest
from trinity import build_site
from trinity.errors import ThemeError
from trinity.report import BlockResult, BuildReport


def user_message(request: RecordedRequest) -> str:
    content = request.body["messages"][-1]["content"]
    assert isinstance(content, str)
    return content


def system_message(request: RecordedRequest) -> str | None:
    systems = [m["content"] for m in request.body["messages"] if m["role"] == "system"]
    assert len(systems) <= 1
    return systems[0] if systems else None


def request_for(project: SiteProject, marker: str) -> RecordedRequest:
    (found,) = [r for r in project.server.chat_requests if marker in user_message(r)]
    return found


class Recorder:
    def __init__(self) -> None:
        self.planned_blocks: list[int] = []
        self.done: list[BlockResult] = []

    def planned(self, report: BuildReport) -> None:
        self.planned_blocks.append(report.planned_blocks)

    def block_done(self, result: BlockResult) -> None:
        self.done.append(result)

    def layout_checked(self, done: int, total: int) -> None:
        pass


@pytest.mark.parametrize("provider", ["ollama", "openai"])
def test_build_site_reports_and_observes(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project = make_site_project(provider=provider)
    recorder = Recorder()

    report = build_site(project.root, observer=recorder, environ={})

    assert report.pages == PAGES
    assert report.provider == provider
    assert (report.llm_calls, report.cache_hits, report.failures) == (BLOCKS, 0, [])
    assert recorder.planned_blocks == [BLOCKS]
    assert len(recorder.done) == BLOCKS
    assert {r.source for r in recorder.done} == {"llm"}
    path = OLLAMA_CHAT_PATH if provider == "ollama" else OPENAI_CHAT_PATH
    assert {r.path for r in project.server.chat_requests} == {path}

    again = build_site(project.root, environ={})

    assert (again.llm_calls, again.cache_hits) == (0, BLOCKS)
    assert project.server.chat_count == BLOCKS


def test_dry_run_through_the_library(site_project: SiteProject) -> None:
    report = build_site(site_project.root, dry_run=True, environ={})

    assert report.dry_run
    assert report.count("pending") == BLOCKS
    assert site_project.server.request_count == 0
    assert not site_project.output.exists()


def test_block_parameters_reach_the_ollama_wire(site_project: SiteProject) -> None:
    build_site(site_project.root, environ={})

    about = request_for(site_project, "Write an About section").body
    now = request_for(site_project, "is focusing on this year").body
    summary = request_for(site_project, "Describe the project Tidewater").body
    lessons = request_for(site_project, "what building Tidewater").body
    highlights = request_for(site_project, "highlights of Tidewater (").body
    assert about["options"]["num_predict"] == 160
    assert now["options"]["num_predict"] == 60
    assert summary["options"]["num_predict"] == 120
    assert lessons["options"]["num_predict"] == 90
    # The highlights block sets no max_tokens: llm.max_tokens applies.
    assert site_project.settings()["llm"]["max_tokens"] == 200
    assert highlights["options"]["num_predict"] == 200
    assert {b["options"]["temperature"] for b in (about, now, summary, lessons)} == {0.7}
    assert about["stream"] is False
    assert "format" not in about
    assert highlights["format"]["required"] == ["highlights"]  # the block's schema
    assert {b["model"] for b in (about, now, summary, lessons, highlights)} == {MODEL}


def test_block_parameters_reach_the_openai_wire(openai_site_project: SiteProject) -> None:
    build_site(openai_site_project.root, environ={})

    now = request_for(openai_site_project, "is focusing on this year").body
    highlights = request_for(openai_site_project, "highlights of Lumen (").body
    assert now["max_tokens"] == 60
    assert "response_format" not in now
    assert highlights["response_format"]["type"] == "json_schema"
    assert highlights["response_format"]["json_schema"]["schema"]["required"] == ["highlights"]


def test_site_theme_and_block_system_prompts_are_joined(site_project: SiteProject) -> None:
    site_project.update_settings("llm", system="You write for Mara Quinn's website.")
    site_project.edit_pages(
        lambda pages: pages[1]["blocks"]["now"].update(system="Answer in one sentence.")
    )

    build_site(site_project.root, environ={})

    intro = system_message(request_for(site_project, "introduction for the home page"))
    now = system_message(request_for(site_project, "is focusing on this year"))
    assert intro is not None
    assert now is not None
    site, voice = intro.split("\n\n")
    assert site == "You write for Mara Quinn's website."
    assert voice.startswith("Write in a calm, precise")
    assert now == f"{intro}\n\nAnswer in one sentence."


def test_environment_overrides_the_settings_file(site_project: SiteProject, tmp_path: Path) -> None:
    site_project.update_settings("llm", api_url="http://127.0.0.1:9")  # nothing listens
    environ = {
        "LLM_API_URL": site_project.server.url,
        "LLM_MODEL": "env-model",
        "LLM_API_KEY": "env-key-123",
        "TRINITY_OUTPUT_DIR": "from-env",
    }

    report = build_site(site_project.root, environ=environ)

    assert report.llm_calls == BLOCKS
    requests = site_project.server.chat_requests
    assert {r.body["model"] for r in requests} == {"env-model"}
    assert {r.headers.get("authorization") for r in requests} == {"Bearer env-key-123"}
    assert (site_project.root / "from-env" / "index.html").is_file()
    assert not site_project.output.exists()


def test_openai_key_variable_and_v1_base_url(openai_site_project: SiteProject) -> None:
    project = openai_site_project
    project.update_settings("llm", api_url=project.server.url + "/v1")

    build_site(project.root, environ={"OPENAI_API_KEY": "sk-openai-var"})

    requests = project.server.chat_requests
    assert {r.path for r in requests} == {OPENAI_CHAT_PATH}
    assert {r.headers.get("authorization") for r in requests} == {"Bearer sk-openai-var"}


def test_llm_api_key_wins_over_the_provider_variable(openai_site_project: SiteProject) -> None:
    build_site(
        openai_site_project.root,
        environ={"OPENAI_API_KEY": "sk-provider", "LLM_API_KEY": "sk-trinity"},
    )

    headers = {r.headers.get("authorization") for r in openai_site_project.server.chat_requests}
    assert headers == {"Bearer sk-trinity"}


def test_a_new_api_key_does_not_invalidate_the_cache(openai_site_project: SiteProject) -> None:
    build_site(openai_site_project.root, environ={"OPENAI_API_KEY": "sk-old"})

    report = build_site(openai_site_project.root, environ={"OPENAI_API_KEY": "sk-rotated"})

    assert (report.llm_calls, report.cache_hits) == (0, BLOCKS)


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("llm", {"model": "another-model"}),
        ("llm", {"temperature": 0.2}),
        ("llm", {"max_tokens": 300}),
        ("llm", {"system": "Be brief."}),
    ],
    ids=["model", "temperature", "max_tokens", "system"],
)
def test_settings_that_shape_answers_miss_the_cache(
    site_project: SiteProject, section: str, values: dict[str, Any]
) -> None:
    build_site(site_project.root, environ={})
    site_project.update_settings(section, **values)

    report = build_site(site_project.root, environ={})

    assert report.cache_hits < BLOCKS
    assert report.llm_calls > 0
    assert site_project.server.chat_count == BLOCKS + report.llm_calls


@pytest.mark.parametrize(
    ("section", "values"),
    [("llm", {"timeout": 5}), ("llm", {"concurrency": 1}), ("site", {"author": "M. Quinn"})],
    ids=["timeout", "concurrency", "unused-site-field"],
)
def test_settings_that_do_not_shape_answers_hit_the_cache(
    site_project: SiteProject, section: str, values: dict[str, Any]
) -> None:
    build_site(site_project.root, environ={})
    site_project.update_settings(section, **values)

    report = build_site(site_project.root, environ={})

    assert (report.llm_calls, report.cache_hits) == (0, BLOCKS)


def _all_message_text(project: SiteProject) -> str:
    return "\n".join(
        str(m["content"]) for r in project.server.chat_requests for m in r.body["messages"]
    )


@pytest.mark.parametrize("provider", ["ollama", "openai"])
def test_completion_fields_stay_off_the_chat_wire(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project = make_site_project(provider=provider)

    build_site(project.root, environ={})

    # heading, lead and stop frame a document for base models; chat models never see them.
    sent = _all_message_text(project)
    for text in ("What I'm doing now", "This year I am focusing on", "Building Tidewater taught"):
        assert text not in sent, text
    assert "focusing on this year" in sent  # the prompt itself does reach the model
    for request in project.server.chat_requests:
        assert "stop" not in request.body
        assert "stop" not in request.body.get("options", {})
        assert "prompt" not in request.body  # a chat request, not a completion


@pytest.mark.parametrize("provider", ["ollama", "openai"])
def test_completion_fields_do_not_shape_chat_cache_keys(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project = make_site_project(provider=provider)
    build_site(project.root, environ={})

    def change(pages: list[dict[str, Any]]) -> None:
        pages[1]["blocks"]["now"].update(
            heading="Lately", lead="These days I am", stop=["\n\n", "."]
        )
        pages[2]["blocks"]["highlights"].update(heading="Highlights", stop=["}"])

    project.edit_pages(change)

    report = build_site(project.root, environ={})

    assert (report.llm_calls, report.cache_hits) == (0, BLOCKS)
    assert project.server.chat_count == BLOCKS


def test_cache_can_be_switched_off_in_settings(site_project: SiteProject) -> None:
    site_project.update_settings("cache", enabled=False)

    build_site(site_project.root, environ={})
    build_site(site_project.root, environ={})

    assert site_project.server.chat_count == 2 * BLOCKS
    assert not (site_project.root / ".cache").exists()


def test_cache_folder_setting(site_project: SiteProject) -> None:
    site_project.update_settings("cache", disk={"dir": "var/answers"})

    build_site(site_project.root, environ={})

    assert (site_project.root / "var" / "answers").is_dir()
    assert not (site_project.root / ".cache").exists()


def test_project_theme_extends_a_builtin_one(site_project: SiteProject) -> None:
    theme = site_project.root / "themes" / "warm"
    (theme / "templates").mkdir(parents=True)
    (theme / "static").mkdir()
    (theme / "theme.yaml").write_text(
        "name: warm\ndescription: Minimal, warmer.\nextends: minimal\n"
        "voice: Write like a postcard.\ndefaults:\n  paper: cream\n",
        "utf-8",
    )
    (theme / "templates" / "page.html").write_text(
        '{% extends "base.html" %}\n{% block content %}<p class="warm">{{ page.title }} '
        "on {{ theme.options.paper }}</p>{% for name, html in blocks.items() %}{{ html }}"
        "{% endfor %}{% endblock %}\n",
        "utf-8",
    )
    (theme / "static" / "extra.css").write_text("body { color: brown; }\n", "utf-8")
    site_project.update_settings(
        "build", theme="warm", theme_options={"paper": "ivory", "accent": "#123456"}
    )

    report = build_site(site_project.root, environ={})

    assert report.theme == "warm"
    assert {system_message(r) for r in site_project.server.chat_requests} == {
        "Write like a postcard."
    }
    out = site_project.output
    about = (out / "about" / "index.html").read_text("utf-8")
    assert '<p class="warm">About on ivory</p>' in about
    assert "--accent: #123456" in about  # the parent's base.html, with the option
    assert (out / "static" / "extra.css").is_file()
    assert (out / "static" / "style.css").is_file()  # inherited from minimal
    index = (out / "index.html").read_text("utf-8")
    assert 'class="warm"' not in index  # index.html still comes from minimal


def test_site_templates_override_the_theme(site_project: SiteProject) -> None:
    (site_project.root / "templates").mkdir()
    (site_project.root / "templates" / "item.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1 class="mine">{{ page.title }}</h1>'
        "{{ blocks.summary }}<ol>{% for h in blocks.highlights.highlights %}<li>{{ h }}</li>"
        "{% endfor %}</ol>{% endblock %}\n",
        "utf-8",
    )

    build_site(site_project.root, environ={})

    lumen = (site_project.output / "projects" / "lumen" / "index.html").read_text("utf-8")
    assert '<h1 class="mine">Lumen</h1>' in lumen
    assert "<li>Lumen highlight two</li>" in lumen


def test_template_error_while_rendering_fails_the_build(site_project: SiteProject) -> None:
    (site_project.root / "templates").mkdir()
    (site_project.root / "templates" / "page.html").write_text(
        '{% extends "base.html" %}{% block content %}{{ blocks.missing_block }}{% endblock %}\n',
        "utf-8",
    )

    with pytest.raises(ThemeError) as caught:
        build_site(site_project.root, environ={})

    assert "missing_block" in str(caught.value)
    assert "page.html" in str(caught.value)
    assert not site_project.output.exists()
    assert site_project.leftovers() == []


def test_build_site_generates_shares_and_then_renders_them(site_project: SiteProject) -> None:
    from trinity.plan import Shard

    first = build_site(site_project.root, generate_only=True, shard=Shard(1, 2), environ={})
    second = build_site(site_project.root, generate_only=True, shard=Shard(2, 2), environ={})

    assert (first.status, second.status) == ("generated", "generated")
    assert (first.shard, second.shard) == ("1/2", "2/2")
    assert first.planned_blocks + second.planned_blocks == BLOCKS
    assert not site_project.output.exists()
    rendered = build_site(site_project.root, environ={})
    assert (rendered.status, rendered.llm_calls, rendered.cache_hits) == ("built", 0, BLOCKS)
    assert site_project.server.chat_count == BLOCKS
