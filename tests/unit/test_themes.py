"""render.themes: built-in and project themes, extends chains, templates and options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from trinity.errors import ConfigError, ThemeError
from trinity.render.themes import (
    BUILTIN_THEMES_DIR,
    REQUIRED_TEMPLATES,
    ThemeRenderer,
    list_themes,
    load_theme,
)

BUILTINS = ("minimal", "brutalist")

FULL_SET = {
    "base.html": "<html>{% block content %}{% endblock %}</html>",
    "index.html": "{% extends 'base.html' %}{% block content %}index{% endblock %}",
    "page.html": "{% extends 'base.html' %}{% block content %}page{% endblock %}",
    "item.html": "{% extends 'base.html' %}{% block content %}item{% endblock %}",
}


def make_theme(
    project: Path,
    name: str,
    *,
    meta: dict[str, Any] | None = None,
    templates: dict[str, str] | None = None,
    static: dict[str, str] | None = None,
) -> Path:
    folder = project / "themes" / name
    (folder / "templates").mkdir(parents=True)
    (folder / "theme.yaml").write_text(yaml.safe_dump({"name": name, **(meta or {})}))
    for file, text in (templates or {}).items():
        (folder / "templates" / file).write_text(text)
    for file, text in (static or {}).items():
        path = folder / "static" / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def theme_error(name: str, project: Path) -> ThemeError:
    with pytest.raises(ThemeError) as caught:
        ThemeRenderer(load_theme(name, project), project).require()
    assert caught.value.exit_code == 2
    return caught.value


# ---------------------------------------------------------------------------- built-ins


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_themes_load_and_render(name: str, tmp_path: Path) -> None:
    theme = load_theme(name, tmp_path)
    assert theme.name == name
    assert theme.builtin
    assert theme.folder == BUILTIN_THEMES_DIR / name
    assert theme.description
    assert theme.voice
    assert "accent" in theme.defaults
    renderer = ThemeRenderer(theme, tmp_path)
    renderer.require()
    assert set(REQUIRED_TEMPLATES) <= set(renderer.env.list_templates())
    assert renderer.static_folders()[-1] == BUILTIN_THEMES_DIR / name / "static"


def test_brutalist_extends_minimal_with_its_own_look_and_voice(tmp_path: Path) -> None:
    minimal, brutalist = load_theme("minimal", tmp_path), load_theme("brutalist", tmp_path)
    assert minimal.extends is None
    assert brutalist.extends == "minimal"
    assert brutalist.folders == (BUILTIN_THEMES_DIR / "brutalist", BUILTIN_THEMES_DIR / "minimal")
    assert brutalist.voice != minimal.voice
    assert brutalist.defaults["accent"] != minimal.defaults["accent"]
    renderer = ThemeRenderer(brutalist, tmp_path)
    # Its own base.html, the parent's page.html; its CSS copied over the parent's.
    assert renderer.env.get_template("base.html").filename == str(
        BUILTIN_THEMES_DIR / "brutalist" / "templates" / "base.html"
    )
    assert renderer.env.get_template("page.html").filename == str(
        BUILTIN_THEMES_DIR / "minimal" / "templates" / "page.html"
    )
    assert renderer.static_folders() == [
        BUILTIN_THEMES_DIR / "minimal" / "static",
        BUILTIN_THEMES_DIR / "brutalist" / "static",
    ]


def test_builtin_voices_differ() -> None:
    voices = {load_theme(name, Path("/nonexistent")).voice for name in BUILTINS}
    assert len(voices) == len(BUILTINS)


def test_list_themes_has_builtins_and_project_themes(tmp_path: Path) -> None:
    make_theme(tmp_path, "mine", meta={"extends": "minimal", "description": "Mine."})
    themes = {theme.name: theme for theme in list_themes(tmp_path)}
    assert set(themes) == {"brutalist", "mine", "minimal"}
    assert themes["mine"].description == "Mine."
    assert not themes["mine"].builtin


def test_list_themes_is_sorted(tmp_path: Path) -> None:
    make_theme(tmp_path, "aaa", meta={"extends": "minimal"})
    make_theme(tmp_path, "zzz", meta={"extends": "minimal"})
    names = [theme.name for theme in list_themes(tmp_path)]
    assert names == sorted(names)


def test_folders_without_theme_yaml_are_not_themes(tmp_path: Path) -> None:
    (tmp_path / "themes" / "notatheme" / "templates").mkdir(parents=True)
    assert "notatheme" not in {theme.name for theme in list_themes(tmp_path)}


# ---------------------------------------------------------------------------- extends


def test_child_theme_inherits_and_overrides_templates(tmp_path: Path) -> None:
    make_theme(
        tmp_path,
        "child",
        meta={"extends": "minimal", "defaults": {"extra": 1}},
        templates={"page.html": "child page {{ page.title }}", "custom.html": "custom"},
    )
    theme = load_theme("child", tmp_path)
    assert theme.extends == "minimal"
    assert theme.folders == (tmp_path / "themes" / "child", BUILTIN_THEMES_DIR / "minimal")
    # Parent defaults are merged in, child ones on top.
    assert dict(theme.defaults) == {**load_theme("minimal", tmp_path).defaults, "extra": 1}

    renderer = ThemeRenderer(theme, tmp_path)
    renderer.require({"custom.html": "pages[0]"})
    env = renderer.env
    assert env.get_template("page.html").filename == str(
        tmp_path / "themes" / "child" / "templates" / "page.html"
    )
    assert env.get_template("base.html").filename == str(
        BUILTIN_THEMES_DIR / "minimal" / "templates" / "base.html"
    )
    assert renderer.render("page.html", {"page": {"title": "T"}}) == "child page T"


def test_project_templates_come_before_the_theme_and_its_parent(tmp_path: Path) -> None:
    make_theme(tmp_path, "child", meta={"extends": "minimal"}, templates={"page.html": "child"})
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "page.html").write_text("project")
    (tmp_path / "templates" / "item.html").write_text("project item")
    renderer = ThemeRenderer(load_theme("child", tmp_path), tmp_path)
    assert renderer.render("page.html", {}) == "project"
    assert renderer.render("item.html", {}) == "project item"


def test_child_default_overrides_parent_default(tmp_path: Path) -> None:
    make_theme(tmp_path, "child", meta={"extends": "minimal", "defaults": {"accent": "#111"}})
    assert load_theme("child", tmp_path).defaults["accent"] == "#111"


def test_grandchild_chain(tmp_path: Path) -> None:
    make_theme(tmp_path, "middle", meta={"extends": "brutalist"}, templates={"page.html": "middle"})
    make_theme(tmp_path, "leaf", meta={"extends": "middle"}, templates={"item.html": "leaf"})
    theme = load_theme("leaf", tmp_path)
    assert [f.name for f in theme.folders] == ["leaf", "middle", "brutalist", "minimal"]
    renderer = ThemeRenderer(theme, tmp_path)
    assert (renderer.render("page.html", {}), renderer.render("item.html", {})) == (
        "middle",
        "leaf",
    )


def test_static_folders_parent_first(tmp_path: Path) -> None:
    make_theme(tmp_path, "middle", meta={"extends": "minimal"}, static={"a.css": "middle"})
    make_theme(tmp_path, "leaf", meta={"extends": "middle"}, static={"a.css": "leaf"})
    renderer = ThemeRenderer(load_theme("leaf", tmp_path), tmp_path)
    assert renderer.static_folders() == [
        BUILTIN_THEMES_DIR / "minimal" / "static",
        tmp_path / "themes" / "middle" / "static",
        tmp_path / "themes" / "leaf" / "static",
    ]


def test_project_theme_may_shadow_and_extend_the_builtin_of_the_same_name(
    tmp_path: Path,
) -> None:
    make_theme(tmp_path, "minimal", meta={"extends": "minimal"}, templates={"page.html": "mine"})
    theme = load_theme("minimal", tmp_path)
    assert theme.folders == (tmp_path / "themes" / "minimal", BUILTIN_THEMES_DIR / "minimal")
    renderer = ThemeRenderer(theme, tmp_path)
    renderer.require()
    assert renderer.render("page.html", {}) == "mine"


# ---------------------------------------------------------------------------- errors


def test_unknown_theme_has_a_hint_and_the_list(tmp_path: Path) -> None:
    with pytest.raises(ThemeError) as caught:
        load_theme("minimall", tmp_path)
    message = str(caught.value)
    assert caught.value.argument == "theme"
    assert "unknown theme 'minimall'" in message
    assert "did you mean 'minimal'" in message
    assert "brutalist" in message


def test_extends_an_unknown_theme(tmp_path: Path) -> None:
    make_theme(tmp_path, "child", meta={"extends": "minimul"})
    with pytest.raises(ThemeError) as caught:
        load_theme("child", tmp_path)
    assert caught.value.key == "extends"
    assert caught.value.path == str(Path("themes", "child", "theme.yaml"))
    assert "extends unknown theme 'minimul'" in str(caught.value)
    assert "did you mean 'minimal'" in str(caught.value)


@pytest.mark.parametrize(
    ("chain", "shown"),
    [
        pytest.param({"a": "a"}, "a -> a", id="self"),
        pytest.param({"a": "b", "b": "a"}, "a -> b -> a", id="two"),
        pytest.param({"a": "b", "b": "c", "c": "b"}, "a -> b -> c -> b", id="tail"),
    ],
)
def test_extends_cycle_is_reported_as_a_cycle(
    tmp_path: Path, chain: dict[str, str], shown: str
) -> None:
    for name, parent in chain.items():
        make_theme(tmp_path, name, meta={"extends": parent})
    with pytest.raises(ThemeError) as caught:
        load_theme("a", tmp_path)
    assert f"'extends' goes round in a circle: {shown}" in str(caught.value)
    assert caught.value.key == "extends"
    assert "unknown theme" not in str(caught.value)


def test_a_long_extends_chain_is_not_mistaken_for_a_cycle(tmp_path: Path) -> None:
    names = [f"t{n:02d}" for n in range(25)]
    for child, parent in zip(names, [*names[1:], "minimal"], strict=True):
        make_theme(tmp_path, child, meta={"extends": parent})
    theme = load_theme("t00", tmp_path)
    assert len(theme.folders) == 26
    assert theme.folders[-1] == BUILTIN_THEMES_DIR / "minimal"


def test_theme_name_must_match_its_folder(tmp_path: Path) -> None:
    folder = make_theme(tmp_path, "folder")
    (folder / "theme.yaml").write_text("name: other\n")
    with pytest.raises(ThemeError) as caught:
        load_theme("folder", tmp_path)
    assert caught.value.key == "name"
    assert "'other' must match the theme's folder name 'folder'" in str(caught.value)


def test_unknown_key_in_theme_yaml(tmp_path: Path) -> None:
    make_theme(tmp_path, "t", meta={"extend": "minimal"})
    with pytest.raises(ThemeError, match="did you mean 'extends'"):
        load_theme("t", tmp_path)


def test_template_syntax_error_is_reported_at_load_with_file_and_line(tmp_path: Path) -> None:
    make_theme(
        tmp_path,
        "broken",
        meta={"extends": "minimal"},
        templates={"page.html": "line 1\nline 2\n{% if x %}\nno endif\n"},
    )
    theme = load_theme("broken", tmp_path)
    with pytest.raises(ThemeError) as caught:
        ThemeRenderer(theme, tmp_path)
    assert caught.value.path == str(Path("themes", "broken", "templates", "page.html"))
    assert "template syntax error at line" in str(caught.value)


def test_syntax_error_in_an_unused_template_still_fails_the_load(tmp_path: Path) -> None:
    make_theme(tmp_path, "t", meta={"extends": "minimal"}, templates={"unused.html": "{{ x"})
    with pytest.raises(ThemeError, match=r"unused\.html"):
        ThemeRenderer(load_theme("t", tmp_path), tmp_path)


@pytest.mark.parametrize("missing", REQUIRED_TEMPLATES)
def test_missing_required_template(tmp_path: Path, missing: str) -> None:
    make_theme(tmp_path, "bare", templates={k: v for k, v in FULL_SET.items() if k != missing})
    error = theme_error("bare", tmp_path)
    assert error.path == str(Path("themes", "bare", "templates"))
    assert str(error) == (
        f"{error.path}: template '{missing}' is required by every theme but 'bare' has none "
        "(nor do its parents)"
    )


def test_complete_standalone_theme_passes(tmp_path: Path) -> None:
    make_theme(tmp_path, "bare", templates=FULL_SET)
    ThemeRenderer(load_theme("bare", tmp_path), tmp_path).require()


def test_missing_template_used_by_a_page_names_the_page(tmp_path: Path) -> None:
    renderer = ThemeRenderer(load_theme("minimal", tmp_path), tmp_path)
    with pytest.raises(ThemeError) as caught:
        renderer.require({"page.html": "pages[0]", "pag.html": "pages[1]"})
    assert caught.value.exit_code == 2
    assert caught.value.path == "content/pages.yaml"
    assert caught.value.key == "pages[1].template"
    assert str(caught.value) == (
        "content/pages.yaml: pages[1].template: template 'pag.html' not found in theme "
        "'minimal' (did you mean 'page.html'?)"
    )


def test_missing_template_error_shows_the_pages_file_it_is_given(tmp_path: Path) -> None:
    renderer = ThemeRenderer(load_theme("minimal", tmp_path), tmp_path)
    with pytest.raises(ThemeError) as caught:
        renderer.require({"zzzzzz.html": "pages[3]"}, pages_path="site/content/pages.yaml")
    assert str(caught.value) == (
        "site/content/pages.yaml: pages[3].template: template 'zzzzzz.html' not found in "
        "theme 'minimal'"
    )


def test_a_missing_required_template_is_reported_before_one_a_page_asks_for(
    tmp_path: Path,
) -> None:
    make_theme(tmp_path, "bare", templates={k: v for k, v in FULL_SET.items() if k != "item.html"})
    renderer = ThemeRenderer(load_theme("bare", tmp_path), tmp_path)
    with pytest.raises(ThemeError) as caught:
        renderer.require({"nope.html": "pages[0]"})
    assert "template 'item.html' is required by every theme" in str(caught.value)
    assert caught.value.key is None


# ---------------------------------------------------------------------------- options


def test_theme_options_merge_over_defaults(tmp_path: Path) -> None:
    renderer = ThemeRenderer(load_theme("minimal", tmp_path), tmp_path, {"accent": "#000"})
    assert renderer.options["accent"] == "#000"


def test_unknown_theme_option_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        ThemeRenderer(
            load_theme("minimal", tmp_path), tmp_path, {"acent": "#000"}, settings_path="s.yaml"
        )
    assert caught.value.key == "build.theme_options.acent"
    assert caught.value.path == "s.yaml"
    assert "did you mean 'accent'" in str(caught.value)


# ---------------------------------------------------------------------------- rendering


def test_render_autoescapes(tmp_path: Path) -> None:
    make_theme(tmp_path, "t", meta={"extends": "minimal"}, templates={"x.html": "{{ v }}"})
    renderer = ThemeRenderer(load_theme("t", tmp_path), tmp_path)
    assert renderer.render("x.html", {"v": "<b>"}) == "&lt;b&gt;"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("ok\n{{ nope }}", "unknown variable", id="undefined"),
        pytest.param("ok\n{{ page.missing }}", "unknown variable", id="undefined-attr"),
        pytest.param("ok\n{{ 1 / 0 }}", "template error", id="arithmetic"),
    ],
)
def test_render_errors_name_the_template_file(tmp_path: Path, source: str, message: str) -> None:
    make_theme(tmp_path, "t", meta={"extends": "minimal"}, templates={"x.html": source})
    renderer = ThemeRenderer(load_theme("t", tmp_path), tmp_path)
    with pytest.raises(ThemeError) as caught:
        renderer.render("x.html", {"page": {}})
    assert message in str(caught.value)
    assert caught.value.path is not None
    assert caught.value.path == f"{Path('themes', 't', 'templates', 'x.html')}, line 2"


def test_render_error_inside_a_parent_template_names_that_template(tmp_path: Path) -> None:
    make_theme(
        tmp_path,
        "t",
        templates={
            **FULL_SET,
            "base.html": "<html>\n{{ site.title }}\n{% block content %}{% endblock %}</html>",
        },
    )
    renderer = ThemeRenderer(load_theme("t", tmp_path), tmp_path)
    with pytest.raises(ThemeError) as caught:
        renderer.render("page.html", {})
    assert caught.value.path is not None
    assert "base.html" in caught.value.path


# ---------------------------------------------------------------------- layout guardian


def test_a_theme_without_a_guard_section_gets_the_default_limits(tmp_path: Path) -> None:
    make_theme(tmp_path, "plain", templates=FULL_SET)
    limits = load_theme("plain", tmp_path).guard
    assert limits.default.heading_lines == 3
    assert limits.default.block_lines is None
    assert limits.heal_class is None
    assert limits.slot("anything") == limits.default


def test_guard_limits_are_read_with_slots_falling_back_on_the_theme_default(
    tmp_path: Path,
) -> None:
    guard = {
        "heading_lines": 2,
        "block_lines": 80,
        "heal_class": "heal-wrap",
        "slots": {"tagline": {"block_lines": 3}, "title": {"heading_lines": 1}},
    }
    make_theme(tmp_path, "strict", meta={"guard": guard}, templates=FULL_SET)
    limits = load_theme("strict", tmp_path).guard
    assert (limits.default.heading_lines, limits.default.block_lines) == (2, 80)
    assert (limits.slot("tagline").heading_lines, limits.slot("tagline").block_lines) == (2, 3)
    assert (limits.slot("title").heading_lines, limits.slot("title").block_lines) == (1, 80)
    assert limits.slot(None) == limits.default
    assert limits.heal_class == "heal-wrap"
    assert limits.as_json()["slots"]["tagline"] == {"heading_lines": 2, "block_lines": 3}


def test_a_child_theme_inherits_its_parents_guard_section(tmp_path: Path) -> None:
    make_theme(tmp_path, "parent", meta={"guard": {"heading_lines": 4}}, templates=FULL_SET)
    make_theme(tmp_path, "child", meta={"extends": "parent"})
    assert load_theme("child", tmp_path).guard.default.heading_lines == 4


@pytest.mark.parametrize(
    ("guard", "key", "says"),
    [
        ({"heading_lines": 0}, "guard.heading_lines", "at least 1"),
        ({"block_lines": "many"}, "guard.block_lines", "expected an integer"),
        ({"heal_class": "a b"}, "guard.heal_class", "not a CSS class name"),
        ({"slots": {"x": {"lines": 3}}}, "guard.slots.x.lines", "unknown key"),
        ({"slots": ["x"]}, "guard.slots", "expected a mapping"),
        ({"heding_lines": 3}, "guard.heding_lines", "heading_lines"),
    ],
)
def test_a_bad_guard_section_names_the_file_and_key(
    tmp_path: Path, guard: dict[str, Any], key: str, says: str
) -> None:
    make_theme(tmp_path, "bad", meta={"guard": guard}, templates=FULL_SET)
    with pytest.raises(ThemeError) as caught:
        load_theme("bad", tmp_path)
    assert caught.value.exit_code == 2
    assert caught.value.key == key
    assert says in str(caught.value)
    assert "theme.yaml" in str(caught.value)
