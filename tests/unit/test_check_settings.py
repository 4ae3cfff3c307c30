"""Reading `checks:`, `guards:`, `judge:`, `llm.cascade` and `llm.repair_attempts`; a
block's checks over the site's; `mentions` rendered per page; `forbid` patterns compiled."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.unit.conftest import ProjectFactory
from trinity.checks.patterns import compile_pattern
from trinity.checks.spec import CheckSpec, GuardSpec, JudgeSpec, LinkRule, Range
from trinity.config import Settings
from trinity.errors import ConfigError, ContentError, InputError
from trinity.site import Site, load_site

SITE = {"site": {"title": "Test"}}
PROJECTS = [
    {"name": "Tidewater", "language": "Python", "year": 2025, "tags": ["etl"], "live": True},
    {"name": "Lumen", "language": "TypeScript", "year": 2022, "description": None},
]


def settings(project: ProjectFactory, **sections: Any) -> Settings:
    project.settings_file(yaml.safe_dump({**SITE, **sections}, sort_keys=False))
    return project.load()


def config_error(project: ProjectFactory, **sections: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        settings(project, **sections)
    assert caught.value.exit_code == 2
    assert caught.value.path == "config/settings.yaml"
    return caught.value


def site(project: ProjectFactory, blocks: dict[str, Any], **sections: Any) -> Site:
    """A site of one collection page per project, with `blocks`, under settings `sections`."""
    project.settings_file(yaml.safe_dump({**SITE, **sections}, sort_keys=False))
    project.data("projects.yaml", PROJECTS)
    project.pages(
        [{"collection": "projects", "slug": "p/{{ item.name | slugify }}", "blocks": blocks}]
    )
    return load_site(project.load())


def site_error(project: ProjectFactory, blocks: dict[str, Any], **sections: Any) -> InputError:
    with pytest.raises(InputError) as caught:
        site(project, blocks, **sections)
    assert caught.value.exit_code == 2
    return caught.value


def checks_of(site: Site, block: str = "summary") -> list[CheckSpec]:
    return [b.checks for page in site.pages for b in page.blocks if b.name == block]


# ---------------------------------------------------------------------------- forbid patterns


@pytest.mark.parametrize(
    ("source", "text", "found"),
    [
        ("As an AI", "Well, as an AI model I cannot", True),
        ("As an AI", "as\n  an   AI", True),  # any whitespace between the words
        ("As an AI", "It has an aid", False),  # whole words only
        ("lorem ipsum", "Lorem Ipsum dolor", True),
        ("lorem ipsum", "xlorem ipsum", False),
        ("[Your Name]", "Signed, [your name].", True),  # brackets are literal, not a class
        ("[Your Name]", "Signed, Y", False),
        ("C++", "I write C++ daily", True),
        ("/\\bTODO\\b/", "a TODO here", True),
        ("/\\bTODO\\b/", "a todo here", False),  # a regex matches as written
        ("/(?i)\\bTODO\\b/", "a todo here", True),
    ],
)
def test_compile_pattern_phrases_and_regexes(source: str, text: str, found: bool) -> None:
    pattern = compile_pattern(source)
    assert pattern.source == source
    assert bool(pattern.regex.search(text)) is found


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("/([a-z]/", "not a valid regular expression: missing ), unterminated subpattern"),
        ("/*x/", "not a valid regular expression: nothing to repeat at position 0"),
        ("//", "an empty regular expression"),
        ("/a*/", "matches an empty text"),
        ("   ", "must not be empty"),
    ],
)
def test_compile_pattern_refuses_with_a_reason(source: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^" + reason.replace("(", r"\(").replace(")", r"\)")):
        compile_pattern(source)


def test_a_lone_slash_is_a_phrase() -> None:
    assert compile_pattern("/").regex.search("a / b")


# ---------------------------------------------------------------------------- site-wide checks


def test_no_checks_section_gives_the_defaults(project: ProjectFactory) -> None:
    loaded = settings(project)
    assert loaded.checks == CheckSpec()
    assert loaded.guards == GuardSpec(injection="warn", pii="warn")
    assert loaded.judge is None
    assert (loaded.llm.cascade, loaded.llm.repair_attempts) == ((), 2)


def test_every_check_is_read(project: ProjectFactory) -> None:
    checks = settings(
        project,
        checks={
            "words": {"min": 20, "max": 120},
            "chars": {"max": 900},
            "complete": False,
            "mentions": ["{{ item.language }}"],
            "forbid": ["lorem ipsum", "/\\bTODO\\b/"],
            "boilerplate": "allow",
            "links": {"schemes": ["HTTPS"], "domains": ["Example.com"]},
            "pii": "redact",
            "repeats": False,
        },
    ).checks
    assert checks.words == Range(20, 120)
    assert checks.chars == Range(None, 900)
    assert checks.complete is False
    assert checks.mentions == ("{{ item.language }}",)  # rendered per page, by the site
    assert [p.source for p in checks.forbid] == ["lorem ipsum", "/\\bTODO\\b/"]
    assert checks.boilerplate is False
    assert checks.links == LinkRule(schemes=("https",), domains=("example.com",))
    assert checks.pii == "redact"
    assert checks.repeats is False


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ({"boilerplate": "forbid"}, CheckSpec(boilerplate=True)),
        ({"links": {}}, CheckSpec(links=LinkRule())),
        ({"links": {"schemes": []}}, CheckSpec(links=LinkRule(schemes=()))),
        ({"pii": False}, CheckSpec(pii=None)),  # `pii: off`, as YAML 1.1 reads it
        ({"pii": None}, CheckSpec(pii=None)),
        ({"words": None, "links": None}, CheckSpec()),
        ({"words": {"min": 0}}, CheckSpec(words=Range(0, None))),
        ({"words": {"min": 5, "max": 5}}, CheckSpec(words=Range(5, 5))),
        ({"mentions": None, "forbid": None}, CheckSpec()),
    ],
)
def test_other_spellings_of_checks(
    project: ProjectFactory, checks: dict[str, Any], expected: CheckSpec
) -> None:
    assert settings(project, checks=checks).checks == expected


@pytest.mark.parametrize(
    ("checks", "key", "message"),
    [
        ({"wrods": {"max": 3}}, "checks.wrods", "unknown key 'wrods' (did you mean 'words'?)"),
        ({"mention": ["x"]}, "checks.mention", "(did you mean 'mentions'?)"),
        ({"words": 120}, "checks.words", "expected {min: N, max: N}, got an integer"),
        ({"words": {}}, "checks.words", "with min, max or both"),
        ({"words": {"min": 50, "max": 10}}, "checks.words", "min (50) is above max (10)"),
        ({"chars": {"min": -1}}, "checks.chars.min", "must be at least 0, got -1"),
        ({"chars": {"max": 0}}, "checks.chars.max", "must be at least 1, got 0"),
        ({"words": {"max": "ten"}}, "checks.words.max", "expected an integer, got a string"),
        ({"words": {"mx": 3}}, "checks.words.mx", "(did you mean 'max'?)"),
        ({"complete": "yes"}, "checks.complete", "expected true or false, got a string"),
        ({"repeats": 1}, "checks.repeats", "expected true or false, got an integer"),
        ({"mentions": "Python"}, "checks.mentions", "expected a list of non-empty strings"),
        ({"forbid": "lorem"}, "checks.forbid", "expected a list of non-empty strings"),
        (
            {"forbid": ["lorem", "/([a-z]/"]},
            "checks.forbid[1]",
            "not a valid regular expression: missing ), unterminated subpattern at position 0",
        ),
        ({"forbid": ["/.*/"]}, "checks.forbid[0]", "matches an empty text"),
        ({"boilerplate": "off"}, "checks.boilerplate", "'off' is not one of forbid, allow"),
        ({"boilerplate": False}, "checks.boilerplate", "expected a string"),
        ({"pii": "redcat"}, "checks.pii", "(did you mean 'redact'?)"),
        ({"links": ["https"]}, "checks.links", "expected a mapping, got a list"),
        ({"links": {"scheme": ["https"]}}, "checks.links.scheme", "(did you mean 'schemes'?)"),
        ({"links": {"schemes": ["ht tp"]}}, "checks.links.schemes[0]", "not a URL scheme"),
        (
            {"links": {"domains": ["https://example.com"]}},
            "checks.links.domains[0]",
            "not a domain name such as example.com",
        ),
    ],
)
def test_bad_checks_name_file_and_key(
    project: ProjectFactory, checks: dict[str, Any], key: str, message: str
) -> None:
    error = config_error(project, checks=checks)
    assert error.key == key
    assert message in str(error)
    assert str(error).startswith(f"config/settings.yaml: {key}: ")


def test_checks_must_be_a_mapping(project: ProjectFactory) -> None:
    error = config_error(project, checks=["words"])
    assert (error.key, error.detail) == ("checks", "expected a mapping, got a list")


# ---------------------------------------------------------------------------- guards


@pytest.mark.parametrize(
    ("guards", "expected"),
    [
        ({"injection": "block"}, GuardSpec(injection="block", pii="warn")),
        ({"pii": "off"}, GuardSpec(injection="warn", pii="off")),
        ({"injection": False, "pii": "block"}, GuardSpec(injection="off", pii="block")),
    ],
)
def test_guards(project: ProjectFactory, guards: dict[str, Any], expected: GuardSpec) -> None:
    assert settings(project, guards=guards).guards == expected


def test_a_bare_off_in_yaml_turns_a_guard_off(project: ProjectFactory) -> None:
    project.settings_file("site: {title: T}\nguards:\n  injection: off\n")
    assert project.load().guards.injection == "off"


@pytest.mark.parametrize(
    ("guards", "key", "message"),
    [
        ({"injection": "redact"}, "guards.injection", "'redact' is not one of block, warn, off"),
        ({"injection": True}, "guards.injection", "expected a string, got true or false"),
        ({"pi": "warn"}, "guards.pi", "(did you mean 'pii'?)"),
    ],
)
def test_bad_guards(
    project: ProjectFactory, guards: dict[str, Any], key: str, message: str
) -> None:
    error = config_error(project, guards=guards)
    assert error.key == key
    assert message in str(error)


# ---------------------------------------------------------------------------- judge


def test_judge(project: ProjectFactory) -> None:
    loaded = settings(
        project,
        llm={"provider": "ollama", "aliases": {"strong": "openai:gpt-4o"}},
        judge={"model": "strong", "criteria": ["accurate"], "threshold": 0.8},
    )
    assert loaded.judge == JudgeSpec(model="strong", criteria=("accurate",), threshold=0.8)


@pytest.mark.parametrize("model", ["llama3.2", "anthropic:claude-3-5-haiku-latest"])
def test_a_judge_model_reaches_its_provider(project: ProjectFactory, model: str) -> None:
    loaded = settings(project, llm={"provider": "ollama"}, judge={"model": model})
    assert loaded.judge == JudgeSpec(model=model)
    provider = model.partition(":")[0] if ":" in model else "ollama"
    assert provider == "ollama" or provider in loaded.llm.endpoints


@pytest.mark.parametrize(
    ("judge", "key", "message"),
    [
        ({}, "judge.model", "is required"),
        ({"model": ""}, "judge.model", "must not be empty"),
        ({"model": "openai:"}, "judge.model", "'openai:' is not an alias or 'provider:model'"),
        ({"model": "m", "threshold": 1.5}, "judge.threshold", "must be at most 1"),
        ({"model": "m", "threshold": -0.1}, "judge.threshold", "must be at least 0"),
        ({"model": "m", "criteria": "be good"}, "judge.criteria", "expected a list"),
        ({"model": "m", "treshold": 0.5}, "judge.treshold", "(did you mean 'threshold'?)"),
        ("strong", "judge", "expected a mapping, got a string"),
    ],
)
def test_bad_judge(project: ProjectFactory, judge: Any, key: str, message: str) -> None:
    error = config_error(project, llm={"provider": "ollama"}, judge=judge)
    assert error.key == key
    assert message in str(error)


def test_the_local_model_cannot_judge_for_a_server(project: ProjectFactory) -> None:
    error = config_error(project, llm={"provider": "ollama"}, judge={"model": "local:gemma"})
    assert error.key == "judge.model"


# ---------------------------------------------------------------------------- cascade, repairs


def test_cascade_and_repair_attempts(project: ProjectFactory) -> None:
    llm = settings(
        project,
        llm={
            "provider": "ollama",
            "aliases": {"cheap": "llama3.2", "strong": "openai:gpt-4o"},
            "cascade": ["cheap", "strong", "anthropic:claude-3-5-haiku-latest"],
            "repair_attempts": 0,
        },
    ).llm
    assert llm.cascade == ("cheap", "strong", "anthropic:claude-3-5-haiku-latest")
    assert llm.repair_attempts == 0
    assert {"openai", "anthropic"} <= set(llm.endpoints)  # each step's provider is reached


@pytest.mark.parametrize(
    ("llm", "key", "message"),
    [
        ({"cascade": "cheap"}, "llm.cascade", "expected a list of non-empty strings"),
        ({"cascade": ["a", ""]}, "llm.cascade", "expected a list of non-empty strings"),
        ({"cascade": ["a", "openai:"]}, "llm.cascade[1]", "is not an alias or 'provider:model'"),
        ({"cascade": ["a", "b", "a"]}, "llm.cascade[2]", "'a' is listed twice"),
        ({"cascade": ["local:gemma"]}, "llm.aliases", "the local model cannot be"),
        ({"repair_attempts": 6}, "llm.repair_attempts", "must be at most 5"),
        ({"repair_attempts": -1}, "llm.repair_attempts", "must be at least 0"),
        ({"repair_attempts": 1.5}, "llm.repair_attempts", "expected an integer"),
        ({"repair_atempts": 1}, "llm.repair_atempts", "(did you mean 'repair_attempts'?)"),
    ],
)
def test_bad_cascade_and_repair_attempts(
    project: ProjectFactory, llm: dict[str, Any], key: str, message: str
) -> None:
    error = config_error(project, llm={"provider": "ollama", **llm})
    assert error.key == key
    assert message in str(error)


def test_the_digest_follows_the_new_settings(project: ProjectFactory) -> None:
    plain = settings(project).digest()
    assert settings(project, checks={"complete": True}).digest() == plain  # the default
    assert settings(project, checks={"pii": "block"}).digest() != plain
    assert settings(project, llm={"repair_attempts": 3}).digest() != plain


# ---------------------------------------------------------------------------- blocks


def test_a_block_without_checks_has_the_sites(project: ProjectFactory) -> None:
    loaded = site(project, {"summary": "Describe."}, checks={"pii": "block"})
    assert checks_of(loaded) == [CheckSpec(pii="block")] * 2


def test_a_block_without_any_checks_has_the_defaults(project: ProjectFactory) -> None:
    assert checks_of(site(project, {"summary": "Describe."})) == [CheckSpec()] * 2


def test_a_blocks_checks_overlay_the_sites_key_by_key(project: ProjectFactory) -> None:
    loaded = site(
        project,
        {
            "summary": {
                "prompt": "Describe.",
                "checks": {
                    "words": {"max": 80},
                    "forbid": ["/\\bTODO\\b/", "lorem ipsum"],
                    "pii": "warn",
                    "links": None,
                },
            },
            "other": "Say more.",
        },
        checks={
            "words": {"min": 20, "max": 120},
            "forbid": ["lorem ipsum", "As an AI"],
            "pii": "block",
            "repeats": False,
            "links": {"schemes": ["https"]},
        },
    )
    summary = checks_of(loaded)[0]
    assert summary.words == Range(None, 80)  # replaced as a whole, not merged with min
    # Added to the site's list, a pattern given twice kept once.
    assert [p.source for p in summary.forbid] == ["lorem ipsum", "As an AI", "/\\bTODO\\b/"]
    assert summary.pii == "warn"
    assert summary.links is None  # null takes the site's check away for this block
    assert summary.repeats is False  # not named by the block: the site's
    other = checks_of(loaded, "other")[0]
    assert other == loaded.settings.checks


def test_mentions_are_rendered_with_the_pages_data(project: ProjectFactory) -> None:
    loaded = site(
        project,
        {
            "summary": {
                "prompt": "Describe {{ item.name }}.",
                "checks": {"mentions": ["{{ item.language }}", "{{ item.name | upper }}"]},
            }
        },
    )
    assert [c.mentions for c in checks_of(loaded)] == [
        ("Python", "TIDEWATER"),
        ("TypeScript", "LUMEN"),
    ]


def test_site_wide_mentions_are_rendered_per_page_unless_a_block_has_its_own(
    project: ProjectFactory,
) -> None:
    loaded = site(
        project,
        {
            "summary": "Describe.",
            "lessons": {"prompt": "Lessons.", "checks": {"mentions": ["{{ item.name }}"]}},
        },
        checks={"mentions": ["{{ item.language }}"]},
    )
    assert [c.mentions for c in checks_of(loaded)] == [("Python",), ("TypeScript",)]
    assert [c.mentions for c in checks_of(loaded, "lessons")] == [("Tidewater",), ("Lumen",)]


@pytest.mark.parametrize(
    ("mentions", "key", "message"),
    [
        (
            ["{{ item.lang }}"],
            "pages[0].blocks.summary.checks.mentions[0]",
            "unknown variable in template (item 1 of 'projects'): 'dict object' has no "
            "attribute 'lang'",
        ),
        (
            ["Python", "{{ item.name "],
            "pages[0].blocks.summary.checks.mentions[1]",
            "template syntax error at line 1",
        ),
        (
            ["{{ item.description }}"],
            "pages[0].blocks.summary.checks.mentions[0]",
            "(item 1 of 'projects')",  # Tidewater has no description
        ),
    ],
)
def test_bad_block_mentions_name_the_key(
    project: ProjectFactory,
    mentions: list[str],
    key: str,
    message: str,
) -> None:
    error = site_error(
        project, {"summary": {"prompt": "Describe.", "checks": {"mentions": mentions}}}
    )
    assert isinstance(error, ContentError)
    assert (error.path, error.key) == ("content/pages.yaml", key)
    assert message in str(error)


def test_a_mention_that_renders_to_nothing_is_refused(project: ProjectFactory) -> None:
    error = site_error(
        project,
        {"summary": {"prompt": "D.", "checks": {"mentions": ["{{ item.get('nick') or '' }}"]}}},
    )
    assert error.key == "pages[0].blocks.summary.checks.mentions[0]"
    assert "renders to nothing (item 1 of 'projects')" in str(error)


def test_bad_site_wide_mentions_name_the_settings_file(project: ProjectFactory) -> None:
    error = site_error(project, {"summary": "Describe."}, checks={"mentions": ["{{ item.x }}"]})
    assert (error.path, error.key) == ("config/settings.yaml", "checks.mentions[0]")
    error = site_error(project, {"summary": "Describe."}, checks={"mentions": ["{% if %}"]})
    assert isinstance(error, ConfigError)
    assert (error.path, error.key) == ("config/settings.yaml", "checks.mentions[0]")


@pytest.mark.parametrize(
    ("checks", "key", "message"),
    [
        ({"wrods": {"max": 3}}, "pages[0].blocks.summary.checks.wrods", "did you mean 'words'"),
        (
            {"forbid": ["/(/"]},
            "pages[0].blocks.summary.checks.forbid[0]",
            "not a valid regular expression",
        ),
        (
            {"chars": {"min": 10, "max": 5}},
            "pages[0].blocks.summary.checks.chars",
            "min (10) is above max (5)",
        ),
        ("strict", "pages[0].blocks.summary.checks", "expected a mapping, got a string"),
    ],
)
def test_bad_block_checks_name_the_key(
    project: ProjectFactory, checks: Any, key: str, message: str
) -> None:
    error = site_error(project, {"summary": {"prompt": "Describe.", "checks": checks}})
    assert isinstance(error, ContentError)
    assert (error.path, error.key) == ("content/pages.yaml", key)
    assert message in str(error)


# ---------------------------------------------------------------------------- facts


def test_a_collection_page_has_its_items_scalar_fields_as_facts(project: ProjectFactory) -> None:
    project.settings_file()
    project.data("projects.yaml", PROJECTS)
    project.pages(
        [
            {"slug": "index", "title": "Home", "blocks": {"intro": "Hi."}},
            {"collection": "projects", "slug": "p/{{ item.name | slugify }}"},
        ]
    )
    index, tidewater, lumen = load_site(project.load()).pages
    assert dict(index.facts) == {}
    # Lists and mappings are left out, true/false spelt as in YAML, null left out.
    assert dict(tidewater.facts) == {
        "name": "Tidewater",
        "language": "Python",
        "year": "2025",
        "live": "true",
    }
    assert dict(lumen.facts) == {"name": "Lumen", "language": "TypeScript", "year": "2022"}
