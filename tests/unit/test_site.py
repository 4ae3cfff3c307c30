"""site.load_site: pages, collections, blocks, prompts, data files and slugs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.conftest import ProjectFactory
from trinity.errors import ContentError
from trinity.site import Block, Page, Site, load_site, slugify


def load(project: ProjectFactory, pages: Any, **data: Any) -> Site:
    project.pages(pages)
    for name, value in data.items():
        project.data(name, value)
    return load_site(project.load())


def content_error(project: ProjectFactory, pages: Any, **data: Any) -> ContentError:
    with pytest.raises(ContentError) as caught:
        load(project, pages, **data)
    assert caught.value.exit_code == 2
    return caught.value


FAST = settings(max_examples=300, database=None, deadline=None)

PROJECTS = [
    {"name": "Über Café", "lang": "Python"},
    {"name": "Data Tool 2", "lang": "Rust", "title": "The Data Tool"},
]


# ---------------------------------------------------------------------------- pages


def test_plain_pages_get_default_templates_and_urls(project: ProjectFactory) -> None:
    site = load(
        project,
        [
            {"slug": "index", "title": "Home", "blocks": {"intro": "Say hi."}},
            {"slug": "about", "title": "About", "description": "Who", "blocks": {}},
            {"slug": "docs/setup", "title": "Setup", "template": "custom.html"},
        ],
    )
    index, about, setup = site.pages
    assert (index.slug, index.template, index.url, index.output_path) == (
        "index",
        "index.html",
        "",
        "index.html",
    )
    assert (about.template, about.url, about.output_path) == (
        "page.html",
        "about/",
        "about/index.html",
    )
    assert about.description == "Who"
    assert about.blocks == ()
    assert (setup.template, setup.output_path) == ("custom.html", "docs/setup/index.html")
    assert [p.source for p in site.pages] == ["pages[0]", "pages[1]", "pages[2]"]
    assert all(p.collection is None and p.item is None for p in site.pages)
    assert site.block_count == 1


def test_collection_expands_one_page_per_item(project: ProjectFactory) -> None:
    site = load(
        project,
        [
            {
                "collection": "projects",
                "slug": "projects/{{ item.name | slugify }}",
                "blocks": {"summary": "Describe {{ item.name }} in {{ item.lang }}."},
            }
        ],
        **{"projects.yaml": PROJECTS},
    )
    first, second = site.pages
    assert first.slug == "projects/uber-cafe"
    assert second.slug == "projects/data-tool-2"
    # The default title is item.title when the item has one, else item.name.
    assert (first.title, second.title) == ("Über Café", "The Data Tool")
    assert {p.template for p in site.pages} == {"item.html"}
    assert {p.collection for p in site.pages} == {"projects"}
    assert first.item == PROJECTS[0]
    assert first.blocks[0].prompt == "Describe Über Café in Python."
    assert second.blocks[0].prompt == "Describe Data Tool 2 in Rust."
    assert site.block_count == 2


def test_collection_title_and_description_templates(project: ProjectFactory) -> None:
    site = load(
        project,
        [
            {
                "collection": "projects",
                "slug": "p/{{ item.name | slugify }}",
                "title": "{{ item.name | upper }}",
                "description": "{{ page.title }} by {{ site.title }}",
                "template": "project.html",
            }
        ],
        **{"projects.json": PROJECTS},
    )
    assert [p.title for p in site.pages] == ["ÜBER CAFÉ", "DATA TOOL 2"]
    assert site.pages[0].description == "ÜBER CAFÉ by Test Site"
    assert site.pages[0].template == "project.html"


def test_empty_collection_makes_no_pages(project: ProjectFactory) -> None:
    site = load(
        project,
        [
            {"slug": "index", "title": "Home"},
            {"collection": "things", "slug": "t/{{ item }}"},
        ],
        **{"things.yaml": []},
    )
    assert [p.slug for p in site.pages] == ["index"]


def test_block_shorthand_and_mapping_forms(project: ProjectFactory) -> None:
    site = load(
        project,
        [
            {
                "slug": "index",
                "title": "Home",
                "blocks": {
                    "short": "  Hello {{ site.title }}  ",
                    "long": {
                        "prompt": "Facts",
                        "format": "text",
                        "max_tokens": 50,
                        "temperature": 0.2,
                        "system": "Be {{ page.title }}-like.",
                    },
                    "data": {
                        "prompt": "JSON please",
                        "format": "json",
                        "schema": {"type": "object", "required": ["a"]},
                    },
                },
            }
        ],
    )
    short, long, data = site.pages[0].blocks
    # The heading defaults to the block's name; no lead and the format's default stops.
    assert short == Block(name="short", prompt="Hello Test Site", heading="Short")
    assert long == Block(
        name="long",
        prompt="Facts",
        format="text",
        max_tokens=50,
        temperature=0.2,
        system="Be Home-like.",
        heading="Long",
    )
    assert data.format == "json"
    assert data.schema == {"type": "object", "required": ["a"]}
    assert data.system is None


def test_heading_and_lead_are_templates_and_stop_a_list(project: ProjectFactory) -> None:
    site = load(
        project,
        [
            {
                "collection": "projects",
                "slug": "p/{{ item.name | slugify }}",
                "blocks": {
                    "key_facts": "Facts about {{ item.name }}.",
                    "story": {
                        "prompt": "Tell it.",
                        "heading": "How {{ item.name }} began ({{ site.title }})",
                        "lead": "  {{ item.name }} is written in {{ item.lang }}  ",
                        "stop": ["\n\n", "END"],
                    },
                },
            }
        ],
        **{"projects.yaml": PROJECTS},
    )
    first, second = site.pages
    facts, story = first.blocks
    # The heading defaults to the block's name, made readable; no lead, default stops.
    assert (facts.heading, facts.lead, facts.stop) == ("Key facts", "", None)
    assert story.heading == "How Über Café began (Test Site)"
    assert story.lead == "Über Café is written in Python"
    assert story.stop == ("\n\n", "END")
    assert second.blocks[1].heading == "How Data Tool 2 began (Test Site)"
    assert second.blocks[1].lead == "Data Tool 2 is written in Rust"


def test_an_empty_stop_list_is_kept(project: ProjectFactory) -> None:
    block = {"prompt": "p", "stop": []}
    site = load(project, [{"slug": "x", "title": "T", "blocks": {"b": block}}])
    assert site.pages[0].blocks[0].stop == ()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        pytest.param("stop", "END", "expected a list of non-empty strings, got a string",
                     id="stop-string"),
        pytest.param("stop", ["a", ""], "expected a list of non-empty strings", id="stop-empty"),
        pytest.param("stop", ["a", 1], "expected a list of non-empty strings", id="stop-int"),
        pytest.param("stop", [None], "expected a list of non-empty strings", id="stop-null"),
        pytest.param("stop", {"a": 1}, "got a mapping", id="stop-mapping"),
        pytest.param("heading", "", "must not be empty", id="heading-empty"),
        pytest.param("heading", 3, "expected a string, got an integer", id="heading-int"),
        pytest.param("heading", "{{ nope }}", "unknown variable", id="heading-variable"),
        pytest.param("heading", "{{ '' }}", "renders to nothing", id="heading-renders-empty"),
        pytest.param("heading", "{{ site.description }}  ", "renders to nothing",
                     id="heading-renders-blank"),
        pytest.param("lead", "{{ nope }}", "unknown variable", id="lead-variable"),
        pytest.param("lead", "{% if %}", "template syntax error", id="lead-syntax"),
        pytest.param("lead", ["x"], "expected a string, got a list", id="lead-list"),
    ],
)  # fmt: skip
def test_bad_heading_lead_and_stop_name_the_key(
    project: ProjectFactory, field: str, value: Any, message: str
) -> None:
    block = {"prompt": "p", field: value}
    error = content_error(project, [{"slug": "x", "title": "T", "blocks": {"b": block}}])
    assert error.key == f"pages[0].blocks.b.{field}"
    assert message in str(error)


def test_blocks_keep_their_written_order(project: ProjectFactory) -> None:
    names = ["zeta", "alpha", "mid"]
    pages = "pages:\n  - slug: index\n    title: H\n    blocks:\n" + "".join(
        f"      {n}: say {n}\n" for n in names
    )
    site = load(project, pages)
    assert [b.name for b in site.pages[0].blocks] == names


def test_prompts_see_site_data_page_and_item(project: ProjectFactory) -> None:
    project.settings_file("site:\n  title: Mara\n  params: {city: Oslo}\n")
    site = load(
        project,
        [
            {
                "collection": "projects",
                "slug": "p/{{ item.name | slugify }}",
                "blocks": {
                    "all": "{{ site.title }}|{{ site.params.city }}|{{ data.profile.role }}|"
                    "{{ page.slug }}|{{ page.title }}|{{ page.collection }}|{{ item.lang }}"
                },
            }
        ],
        **{"projects.yaml": PROJECTS[:1], "profile.yaml": {"role": "dev"}},
    )
    assert site.pages[0].blocks[0].prompt == "Mara|Oslo|dev|p/uber-cafe|Über Café|projects|Python"
    assert site.data["profile"] == {"role": "dev"}


def test_data_files_yaml_yml_and_json_all_load(project: ProjectFactory) -> None:
    site = load(
        project,
        [{"slug": "index", "title": "H"}],
        **{"a.yaml": {"k": 1}, "b.yml": [1, 2], "c.json": {"j": True}},
    )
    assert dict(site.data) == {"a": {"k": 1}, "b": [1, 2], "c": {"j": True}}


def test_files_with_other_suffixes_are_not_data(project: ProjectFactory) -> None:
    project.data("a.yaml", {"k": 1})
    (project.root / "content" / "data" / "notes.txt").write_text("ignored")
    (project.root / "content" / "data" / "sub.yaml").mkdir()
    site = load(project, [{"slug": "index", "title": "H"}])
    assert dict(site.data) == {"a": {"k": 1}}


def test_two_data_files_with_one_stem_are_refused(project: ProjectFactory) -> None:
    error = content_error(
        project, [{"slug": "index", "title": "H"}], **{"x.json": [1], "x.yaml": [2]}
    )
    assert "two data files are named 'x'" in str(error)
    assert error.path in {
        str(Path("content", "data", "x.json")),
        str(Path("content", "data", "x.yaml")),
    }


def test_invalid_data_file_names_it(project: ProjectFactory) -> None:
    project.data("ok.yaml", [1])
    (project.root / "content" / "data" / "broken.yaml").write_text("a: [1\n")
    error = content_error(project, [{"slug": "index", "title": "H"}])
    assert "broken.yaml" in str(error)
    assert "line" in str(error)


# ---------------------------------------------------------------------------- errors


def test_missing_pages_file(project: ProjectFactory) -> None:
    with pytest.raises(ContentError, match="file not found"):
        load_site(project.load())


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        pytest.param("pages: []\n", "pages", "non-empty list of pages", id="empty"),
        pytest.param("pages: {a: 1}\n", "pages", "got a mapping", id="mapping"),
        pytest.param("{}\n", "pages", "got null", id="no-pages"),
        pytest.param("", None, "expected a mapping, got null", id="empty-file"),
        pytest.param("pages: [{slug: x, title: T}]\npagez: 1\n", "pagez", "did you mean 'pages'",
                     id="unknown-top"),
        pytest.param("pages: [{slug: x, titel: T, title: T}]\n", "pages[0].titel",
                     "did you mean 'title'", id="unknown-page-key"),
        pytest.param("pages: [{slug: x}]\n", "pages[0].title", "is required", id="no-title"),
        pytest.param("pages: [{title: x}]\n", "pages[0].slug", "is required", id="no-slug"),
        pytest.param("pages: [x]\n", "pages[0]", "expected a mapping, got a string",
                     id="page-string"),
        pytest.param("pages: [{slug: x, title: T, blocks: [a]}]\n", "pages[0].blocks",
                     "expected a mapping, got a list", id="blocks-list"),
        pytest.param("pages: [{slug: x, title: T, blocks: {b: }}]\n", "pages[0].blocks.b",
                     "expected a mapping, got null", id="block-null"),
        pytest.param("pages: [{slug: x, title: T, blocks: {b: {prompt: hi, sytem: x}}}]\n",
                     "pages[0].blocks.b.sytem", "did you mean 'system'", id="block-unknown"),
        pytest.param("pages: [{slug: x, title: T, blocks: {b: {format: text}}}]\n",
                     "pages[0].blocks.b.prompt", "is required", id="block-no-prompt"),
        pytest.param("pages: [{slug: x, title: T, blocks: {b: {prompt: hi, format: html}}}]\n",
                     "pages[0].blocks.b.format", "not one of markdown, text, json",
                     id="block-format"),
        pytest.param("pages: [{slug: x, title: T, blocks: {b: {prompt: hi, max_tokens: 0}}}]\n",
                     "pages[0].blocks.b.max_tokens", "must be at least 1", id="block-max-tokens"),
        pytest.param("pages: [{slug: x, title: T, blocks: {b: {prompt: hi, temperature: 3}}}]\n",
                     "pages[0].blocks.b.temperature", "must be at most 2", id="block-temperature"),
        pytest.param("pages: [{slug: x, title: T, blocks: {my-block: hi}}]\n",
                     "pages[0].blocks.my-block", "identifiers", id="block-name"),
        pytest.param("pages: [{slug: x, title: T, blocks: {b: '   '}}]\n",
                     "pages[0].blocks.b.prompt", "must not be empty", id="blank-prompt"),
        pytest.param("pages: [{slug: x, title: T, blocks: {b: \"{{ '' }}\"}}]\n",
                     "pages[0].blocks.b.prompt", "renders to nothing", id="renders-empty"),
    ],
)  # fmt: skip
def test_shape_errors_name_the_key_path(
    project: ProjectFactory, text: str, key: str | None, message: str
) -> None:
    error = content_error(project, text)
    assert error.path == "content/pages.yaml"
    assert error.key == key
    assert message in str(error)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("pages: [{slug: x, tilte: T}]\n",
                     "pages[0].tilte: unknown key 'tilte' (did you mean 'title'?)", id="title"),
        pytest.param("pages: [{slgu: x, title: T}]\n",
                     "pages[0].slgu: unknown key 'slgu' (did you mean 'slug'?)", id="slug"),
        pytest.param("pages: [{slug: x, title: T, blocks: {b: {promt: hi}}}]\n",
                     "pages[0].blocks.b.promt: unknown key 'promt' (did you mean 'prompt'?)",
                     id="prompt"),
    ],
)  # fmt: skip
def test_a_misspelt_required_key_is_reported_instead_of_the_missing_one(
    project: ProjectFactory, text: str, message: str
) -> None:
    error = content_error(project, text)
    assert str(error) == f"content/pages.yaml: {message}"


def test_schema_is_validated_when_the_site_loads(project: ProjectFactory) -> None:
    block = {"prompt": "p", "format": "json", "schema": {"type": "objekt"}}
    error = content_error(project, [{"slug": "x", "title": "T", "blocks": {"b": block}}])
    assert error.key == "pages[0].blocks.b.schema"
    assert "not a valid JSON schema" in str(error)


@pytest.mark.parametrize(
    "dialect",
    [
        pytest.param(5, id="int"),
        pytest.param([1], id="list"),
        pytest.param(None, id="null"),
        pytest.param("https://example.com/my-draft", id="unknown"),
    ],
)
def test_unusable_schema_dialect_is_a_content_error(project: ProjectFactory, dialect: Any) -> None:
    schema = {"$schema": dialect, "type": "object"}
    block = {"prompt": "p", "format": "json", "schema": schema}
    error = content_error(project, [{"slug": "x", "title": "T", "blocks": {"b": block}}])
    assert error.key == "pages[0].blocks.b.schema"
    assert "$schema" in str(error)


@pytest.mark.parametrize(
    "dialect",
    [
        "https://json-schema.org/draft/2020-12/schema",
        "http://json-schema.org/draft-07/schema#",
    ],
)
def test_known_schema_dialects_are_accepted(project: ProjectFactory, dialect: str) -> None:
    schema = {"$schema": dialect, "type": "object"}
    block = {"prompt": "p", "format": "json", "schema": schema}
    site = load(project, [{"slug": "x", "title": "T", "blocks": {"b": block}}])
    assert site.pages[0].blocks[0].schema == schema


@pytest.mark.parametrize("block_format", ["markdown", "text"])
def test_schema_on_a_non_json_block_is_refused(project: ProjectFactory, block_format: str) -> None:
    block = {"prompt": "p", "format": block_format, "schema": {"type": "object"}}
    error = content_error(project, [{"slug": "x", "title": "T", "blocks": {"b": block}}])
    assert error.key == "pages[0].blocks.b.schema"
    assert "only json blocks take a schema" in str(error)


def test_unknown_variable_in_a_prompt_names_file_and_key_path(project: ProjectFactory) -> None:
    error = content_error(
        project,
        [
            {"slug": "index", "title": "H"},
            {"slug": "about", "title": "A", "blocks": {"intro": "Hi {{ data.profile.name }}"}},
        ],
    )
    assert error.path == "content/pages.yaml"
    assert error.key == "pages[1].blocks.intro.prompt"
    assert "unknown variable" in str(error)
    assert "profile" in str(error)


def test_unknown_variable_in_a_collection_names_the_item(project: ProjectFactory) -> None:
    error = content_error(
        project,
        [{"collection": "c", "slug": "c/{{ item.name }}", "blocks": {"b": "{{ item.colour }}"}}],
        **{"c.yaml": [{"name": "a", "colour": "red"}, {"name": "b"}]},
    )
    assert error.key == "pages[0].blocks.b.prompt"
    assert "item 2 of 'c'" in str(error)


def test_unknown_variable_in_a_slug(project: ProjectFactory) -> None:
    error = content_error(project, [{"slug": "{{ nope }}", "title": "T"}])
    assert error.key == "pages[0].slug"


def test_template_syntax_error_in_a_prompt_has_its_line(project: ProjectFactory) -> None:
    block = {"prompt": "line one\nline two\n{% if %}\n"}
    error = content_error(project, [{"slug": "x", "title": "T", "blocks": {"b": block}}])
    assert error.key == "pages[0].blocks.b.prompt"
    assert "template syntax error at line 3" in str(error)


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param("{{ ''.__class__.__mro__ }}", id="dunder"),
        pytest.param("{{ data.things.append(4) }}", id="mutation"),
        pytest.param("{{ 1 / 0 }}", id="arithmetic"),
    ],
)
def test_prompts_are_sandboxed(project: ProjectFactory, prompt: str) -> None:
    error = content_error(
        project,
        [{"slug": "x", "title": "T", "blocks": {"b": prompt}}],
        **{"things.yaml": [1, 2, 3]},
    )
    assert error.key == "pages[0].blocks.b.prompt"


def test_missing_collection_data_names_the_data_file(project: ProjectFactory) -> None:
    error = content_error(project, [{"collection": "projects", "slug": "p/{{ item }}"}])
    assert error.key == "pages[0].collection"
    assert "no data file 'projects'" in str(error)
    assert "projects.yaml" in str(error)
    assert "projects.json" in str(error)


@pytest.mark.parametrize("value", [{"a": 1}, "text", 3])
def test_collection_data_must_be_a_list(project: ProjectFactory, value: Any) -> None:
    error = content_error(
        project, [{"collection": "c", "slug": "c/{{ item }}"}], **{"c.yaml": value}
    )
    assert error.key == "pages[0].collection"
    assert "must be a list" in str(error)


@pytest.mark.parametrize(
    ("slug", "reason"),
    [
        pytest.param("''", "empty", id="empty"),
        pytest.param("/etc", "leading '/'", id="absolute"),
        pytest.param("../up", "'..'", id="dotdot"),
        pytest.param("a/../../b", "'..'", id="dotdot-inside"),
        pytest.param("About", "lowercase", id="uppercase"),
        pytest.param("'my page'", "lowercase", id="space"),
        pytest.param("page.html", "lowercase", id="dot"),
        pytest.param("a//b", "lowercase", id="empty-segment"),
        pytest.param("a/", "lowercase", id="trailing-slash"),
        pytest.param("'a\\b'", "lowercase", id="backslash"),
        pytest.param("static/x", "reserved", id="static-sub"),
        pytest.param("static", "reserved", id="static"),
    ],
)
def test_unsafe_slugs_are_refused_naming_the_page(
    project: ProjectFactory, slug: str, reason: str
) -> None:
    text = f"pages:\n  - slug: index\n    title: H\n  - slug: {slug}\n    title: Bad\n"
    error = content_error(project, text)
    assert error.path == "content/pages.yaml"
    assert error.key == "pages[1].slug"
    assert reason in str(error)


def test_slug_that_slugifies_to_nothing_is_refused(project: ProjectFactory) -> None:
    error = content_error(
        project,
        [{"collection": "c", "slug": "{{ item | slugify }}"}],
        **{"c.yaml": ["ok", "日本語"]},
    )
    assert error.key == "pages[0].slug"
    assert "is empty" in str(error)
    assert "item 2 of 'c'" in str(error)


def test_duplicate_slug_across_pages(project: ProjectFactory) -> None:
    error = content_error(
        project,
        [
            {"slug": "index", "title": "H"},
            {"slug": "about", "title": "A"},
            {"slug": "about", "title": "B"},
        ],
    )
    assert error.key == "pages[2]"
    assert error.path == "content/pages.yaml"
    assert (
        str(error) == "content/pages.yaml: pages[2]: slug 'about' is used twice: also by pages[1]"
    )


def test_pages_file_is_shown_relative_to_the_working_folder(tmp_path: Path) -> None:
    error = content_error(
        ProjectFactory(tmp_path / "site"),
        [{"slug": "about", "title": "A"}, {"slug": "about", "title": "B"}],
    )
    assert error.path == str(Path("site", "content", "pages.yaml"))


def test_two_collection_items_slugifying_alike_are_refused(project: ProjectFactory) -> None:
    error = content_error(
        project,
        [{"collection": "c", "slug": "c/{{ item.name | slugify }}"}],
        **{"c.yaml": [{"name": "Café Ü"}, {"name": "cafe-u!"}]},
    )
    assert error.key == "pages[0]"
    assert "slug 'c/cafe-u' (item 2 of 'c') is used twice: also by pages[0] (item 1 of 'c')" in str(
        error
    )


def test_collection_slug_clashing_with_a_plain_page(project: ProjectFactory) -> None:
    error = content_error(
        project,
        [{"slug": "x/a", "title": "A"}, {"collection": "c", "slug": "x/{{ item }}"}],
        **{"c.yaml": ["a"]},
    )
    assert error.key == "pages[1]"
    assert str(error).endswith("slug 'x/a' (item 1 of 'c') is used twice: also by pages[0]")


# ---------------------------------------------------------------------------- slugify


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Über Café 2", "uber-cafe-2"),
        ("Hello, World!", "hello-world"),
        ("  --Leading and trailing--  ", "leading-and-trailing"),
        ("naïve façade", "naive-facade"),
        ("Ærøskøbing", "rskbing"),
        ("日本語", ""),
        ("ﬁle ①", "file-1"),
        ("a_b.c/d", "a-b-c-d"),
        (2024, "2024"),
        ("", ""),
    ],
)
def test_slugify(value: Any, expected: str) -> None:
    assert slugify(value) == expected


@FAST
@given(st.text())
def test_slugify_output_is_lowercase_words_joined_by_hyphens(value: str) -> None:
    slug = slugify(value)
    assert slug == "" or re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", slug), slug
    assert slugify(slug) == slug


def test_page_url_of_index_and_others() -> None:
    index = Page(slug="index", title="H", template="index.html", blocks=())
    nested = Page(slug="a/b", title="B", template="page.html", blocks=())
    assert (index.url, index.output_path) == ("", "index.html")
    assert (nested.url, nested.output_path) == ("a/b/", "a/b/index.html")


@given(st.text(alphabet=st.characters(blacklist_characters="{"), max_size=40))
def test_text_without_template_syntax_renders_as_jinja_would_render_it(text: str) -> None:
    from trinity.site import _Fixed, _prompt_environment

    expected = _prompt_environment().from_string(text).render()

    # Compared stripped, as the planner uses them: Jinja also drops one trailing newline.
    assert _Fixed.of(text).render({}).strip() == expected.strip()
