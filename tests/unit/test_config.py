"""config.load_settings: defaults, environment overrides, validation and secrets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trinity.cache.settings import CacheSettings, DiskTierSettings
from trinity.config import BuildSettings, load_settings
from trinity.errors import EXIT_BAD_INPUT, ConfigError
from trinity.llm.settings import (
    DEFAULT_API_URLS,
    DEFAULT_LOCAL_MODEL,
    DEFAULT_MODELS,
    PROMPT_STYLES,
    PROVIDERS,
    LLMSettings,
)

WriteSettings = Callable[[str], Path]

SECRET = "sk-test-0123456789abcdef-SECRET"


def load(project: Path, **environ: str) -> object:
    return load_settings(project, environ=environ)


def config_error(project: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(project, environ=environ or {})
    assert caught.value.exit_code == EXIT_BAD_INPUT == 2
    return caught.value


# ---------------------------------------------------------------------------- defaults


def test_defaults_with_only_a_title(write_settings: WriteSettings) -> None:
    project = write_settings("site:\n  title: Hello\n")
    settings = load_settings(project, environ={})

    assert settings.project_dir == project.resolve()
    assert settings.config_path == project.resolve() / "config" / "settings.yaml"
    assert settings.site.title == "Hello"
    assert settings.site.language == "en"
    assert settings.site.base_url is None
    assert settings.llm.provider == "local"
    assert settings.llm.api_url == DEFAULT_API_URLS["local"] == ""
    assert settings.llm.model == LLMSettings.model == DEFAULT_LOCAL_MODEL
    assert settings.llm.api_key is None
    assert settings.llm.concurrency == LLMSettings.concurrency
    assert settings.llm.temperature == LLMSettings.temperature
    assert settings.llm.max_tokens == LLMSettings.max_tokens
    assert settings.llm.top_p is None
    assert settings.cache.enabled is True
    assert settings.cache.directory == project.resolve() / ".cache"
    assert settings.cache.tiers == ("memory", "disk")
    assert settings.cache.ttl is None
    assert settings.build.output_dir == project.resolve() / BuildSettings.output_dir
    assert settings.build.theme == "minimal"
    assert dict(settings.build.theme_options) == {}


def test_file_values_are_read(write_settings: WriteSettings) -> None:
    project = write_settings(
        """
site:
  title: T
  description: D
  author: A
  language: de
  base_url: https://example.com/blog
  params: {colour: red}
llm:
  provider: openai
  api_url: http://llm.local:8080/
  model: gpt-x
  timeout: 5
  concurrency: 9
  temperature: 0
  max_tokens: 77
  top_p: 0.5
  system: Be brief.
  options: {seed: 3}
cache:
  enabled: false
  ttl: 60
  disk: {dir: elsewhere}
build:
  output_dir: public
  theme: brutalist
  theme_options: {accent: "#000"}
"""
    )
    s = load_settings(project, environ={})
    assert s.site.as_context() == {
        "title": "T",
        "description": "D",
        "author": "A",
        "language": "de",
        "base_url": "https://example.com/blog/",
        "params": {"colour": "red"},
    }
    assert (s.llm.provider, s.llm.api_url, s.llm.model) == (
        "openai",
        "http://llm.local:8080",
        "gpt-x",
    )
    assert (s.llm.timeout, s.llm.concurrency, s.llm.temperature) == (5.0, 9, 0.0)
    assert (s.llm.max_tokens, s.llm.top_p, s.llm.system) == (77, 0.5, "Be brief.")
    assert dict(s.llm.options) == {"seed": 3}
    assert s.cache == CacheSettings(
        enabled=False, ttl=60, disk=DiskTierSettings(directory=project.resolve() / "elsewhere")
    )
    assert s.build.output_dir == project.resolve() / "public"
    assert s.build.theme == "brutalist"
    assert dict(s.build.theme_options) == {"accent": "#000"}


# ---------------------------------------------------------------------------- environment


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("LLM_PROVIDER", "openai", "provider", "openai"),
        ("LLM_API_URL", "https://proxy.example/", "api_url", "https://proxy.example"),
        ("LLM_MODEL", "mistral", "model", "mistral"),
        ("LLM_API_KEY", SECRET, "api_key", SECRET),
    ],
)
def test_environment_overrides_the_file(
    write_settings: WriteSettings, variable: str, value: str, attribute: str, expected: str
) -> None:
    project = write_settings(
        "site: {title: T}\nllm: {provider: ollama, api_url: 'http://a:1', model: from-file}\n"
    )
    before = load_settings(project, environ={})
    after = load_settings(project, environ={variable: value})
    assert getattr(before.llm, attribute) != expected
    assert getattr(after.llm, attribute) == expected


def test_provider_from_environment_picks_that_providers_default_url(
    write_settings: WriteSettings,
) -> None:
    project = write_settings("site: {title: T}\n")
    settings = load_settings(project, environ={"LLM_PROVIDER": "openai"})
    assert settings.llm.api_url == DEFAULT_API_URLS["openai"]


def test_empty_environment_variables_do_not_override(write_settings: WriteSettings) -> None:
    project = write_settings("site: {title: T}\nllm: {provider: ollama, model: from-file}\n")
    settings = load_settings(
        project,
        environ={"LLM_MODEL": "", "LLM_PROVIDER": "", "LLM_API_KEY": "", "LLM_API_URL": ""},
    )
    assert settings.llm.model == "from-file"
    assert settings.llm.provider == "ollama"
    assert settings.llm.api_url == DEFAULT_API_URLS["ollama"]
    assert settings.llm.api_key is None


@pytest.mark.parametrize(
    ("provider", "environ", "expected"),
    [
        pytest.param("openai", {"OPENAI_API_KEY": "sk-openai"}, "sk-openai", id="openai-var"),
        pytest.param(
            "openai",
            {"OPENAI_API_KEY": "sk-openai", "LLM_API_KEY": "sk-generic"},
            "sk-generic",
            id="llm-key-wins",
        ),
        pytest.param("ollama", {"OPENAI_API_KEY": "sk-openai"}, None, id="ignored-for-ollama"),
        pytest.param("ollama", {"LLM_API_KEY": "sk-generic"}, "sk-generic", id="ollama-llm-key"),
    ],
)
def test_api_key_sources(
    write_settings: WriteSettings, provider: str, environ: dict[str, str], expected: str | None
) -> None:
    project = write_settings(f"site: {{title: T}}\nllm: {{provider: {provider}}}\n")
    assert load_settings(project, environ=environ).llm.api_key == expected


def test_openai_key_variable_follows_the_provider_chosen_in_the_environment(
    write_settings: WriteSettings,
) -> None:
    project = write_settings("site: {title: T}\nllm: {provider: ollama}\n")
    settings = load_settings(
        project, environ={"LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk-openai"}
    )
    assert settings.llm.api_key == "sk-openai"


@pytest.mark.parametrize(
    ("value", "expected_relative"),
    [("site-out", "site-out"), ("nested/out", "nested/out")],
)
def test_output_dir_from_environment_is_relative_to_the_project(
    write_settings: WriteSettings, value: str, expected_relative: str
) -> None:
    project = write_settings("site: {title: T}\nbuild: {output_dir: from-file}\n")
    settings = load_settings(project, environ={"TRINITY_OUTPUT_DIR": value})
    assert settings.build.output_dir == project.resolve() / expected_relative


def test_absolute_output_dir_from_environment(
    write_settings: WriteSettings, tmp_path: Path
) -> None:
    project = write_settings("site: {title: T}\n")
    target = tmp_path / "elsewhere"
    settings = load_settings(project, environ={"TRINITY_OUTPUT_DIR": str(target)})
    assert settings.build.output_dir == target


def test_environment_is_not_read_from_os_environ_when_given(
    write_settings: WriteSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_settings("site: {title: T}\n")
    monkeypatch.setenv("LLM_MODEL", "from-os-environ")
    assert load_settings(project, environ={}).llm.model == LLMSettings.model


# ---------------------------------------------------------------------------- secrets


def test_repr_of_llm_settings_hides_the_api_key(write_settings: WriteSettings) -> None:
    project = write_settings("site: {title: T}\n")
    settings = load_settings(project, environ={"LLM_API_KEY": SECRET})
    assert settings.llm.api_key == SECRET
    assert SECRET not in repr(settings.llm)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


@pytest.mark.parametrize(
    "name", ["api_key", "API_KEY", "openai_api_key", "key", "token", "client_secret", "password"]
)
def test_a_secret_in_the_settings_file_is_refused_without_echoing_it(
    write_settings: WriteSettings, name: str
) -> None:
    project = write_settings(f"site: {{title: T}}\nllm:\n  {name}: {SECRET}\n")
    error = config_error(project)
    assert error.key == f"llm.{name}"
    assert "LLM_API_KEY" in str(error)
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert SECRET not in str(error.args)


def test_a_secret_of_the_wrong_type_is_still_not_echoed(write_settings: WriteSettings) -> None:
    project = write_settings("site: {title: T}\nllm:\n  api_key: [sk-list-SECRET]\n")
    error = config_error(project)
    assert "sk-list-SECRET" not in str(error)


# ---------------------------------------------------------------------------- file errors


def test_malformed_yaml_names_file_and_line(write_settings: WriteSettings) -> None:
    project = write_settings("site:\n  title: T\nllm:\n  model: [unclosed\n  timeout: 3\n")
    error = config_error(project)
    message = str(error)
    assert "settings.yaml" in message
    assert "line 5" in message


def test_duplicate_key_is_refused_with_its_line(write_settings: WriteSettings) -> None:
    project = write_settings("site:\n  title: A\n  title: B\n")
    error = config_error(project)
    assert "duplicate key 'title'" in str(error)
    assert "line 3" in str(error)
    assert "settings.yaml" in str(error)


def test_duplicate_top_level_section_is_refused(write_settings: WriteSettings) -> None:
    project = write_settings("site: {title: A}\nllm: {model: a}\nllm: {model: b}\n")
    assert "duplicate key 'llm'" in str(config_error(project))


def test_unhashable_yaml_key_is_a_config_error(write_settings: WriteSettings) -> None:
    project = write_settings("site: {title: T}\n? [a, b]\n: 1\n")
    error = config_error(project)
    assert "settings.yaml" in str(error)
    assert "line 2" in str(error)


def test_missing_settings_file_says_how_to_make_a_project(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()

    here = config_error(tmp_path)
    there = config_error(tmp_path / "elsewhere")

    assert str(here) == (
        "config/settings.yaml: file not found; run `trinity init` to create a project here, "
        "or pass --project DIR"
    )
    assert str(there) == (
        "elsewhere/config/settings.yaml: file not found; run `trinity init elsewhere` to "
        "create a project there, or pass --project DIR"
    )


def test_missing_settings_file_named_on_the_command_line_is_only_not_found(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, "other.yaml", environ={})
    assert str(caught.value) == "other.yaml: file not found"


def test_missing_project_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="project folder not found"):
        load_settings(tmp_path / "nope", environ={})


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        pytest.param("site: {title: T}\nsitee: {}\n", "sitee", "site", id="top-level"),
        pytest.param("site: {title: T}\nllm: {modle: x}\n", "llm.modle", "model", id="llm"),
        pytest.param("site: {titel: T, title: T}\n", "site.titel", "title", id="site"),
        pytest.param("site: {title: T}\ncache: {ttk: 3}\n", "cache.ttk", "ttl", id="cache"),
        pytest.param("site: {title: T}\nbuild: {them: x}\n", "build.them", "theme", id="build"),
    ],
)
def test_unknown_keys_are_refused_with_a_hint(
    write_settings: WriteSettings, text: str, key: str, hint: str
) -> None:
    error = config_error(write_settings(text))
    assert error.key == key
    assert f"unknown key '{key.rsplit('.', 1)[-1]}'" in str(error)
    assert f"did you mean '{hint}'" in str(error)
    assert "settings.yaml" in str(error)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "site: {tittle: Mara}\n",
            "site.tittle: unknown key 'tittle' (did you mean 'title'?)",
            id="site-title",
        ),
        pytest.param(
            "site: {title: T}\nllm:\n  api_keys: [{evn: KEY_1}]\n",
            "llm.api_keys[0].evn: unknown key 'evn' (did you mean 'env'?)",
            id="api-key-env",
        ),
        # Nothing like the missing key: it is the mistake.
        pytest.param("site: {author: Mara}\n", "site.title: is required", id="no-typo"),
    ],
)
def test_a_misspelt_required_key_is_reported_instead_of_the_missing_one(
    write_settings: WriteSettings, text: str, message: str
) -> None:
    error = config_error(write_settings(text), {"KEY_1": SECRET})
    assert str(error) == f"config/settings.yaml: {message}"


def test_unknown_key_without_a_close_match_has_no_hint(write_settings: WriteSettings) -> None:
    error = config_error(write_settings("site: {title: T}\nllm: {zzzzzz: 1}\n"))
    assert "unknown key 'zzzzzz'" in str(error)
    assert "did you mean" not in str(error)
    assert "site.params" not in str(error)


def test_unknown_site_key_without_a_close_match_points_at_site_params(
    write_settings: WriteSettings,
) -> None:
    error = config_error(write_settings("site: {title: T, colour: red}\n"))
    assert error.key == "site.colour"
    assert str(error) == (
        "config/settings.yaml: site.colour: unknown key 'colour' "
        "(your own values belong under site.params)"
    )


def test_unknown_site_key_with_a_close_match_gets_the_hint_not_the_advice(
    write_settings: WriteSettings,
) -> None:
    error = config_error(write_settings("site: {titel: T, title: T}\n"))
    assert "did you mean 'title'" in str(error)
    assert "site.params" not in str(error)


@pytest.mark.parametrize(
    ("llm", "key", "message"),
    [
        pytest.param("concurrency: '4'", "llm.concurrency", "expected an integer, got a string"),
        pytest.param(
            "concurrency: true", "llm.concurrency", "expected an integer, got true or false"
        ),
        pytest.param("max_tokens: 1.5", "llm.max_tokens", "expected an integer, got a number"),
        pytest.param("temperature: hot", "llm.temperature", "expected a number, got a string"),
        pytest.param(
            "temperature: false", "llm.temperature", "expected a number, got true or false"
        ),
        pytest.param("timeout: .inf", "llm.timeout", "expected a number"),
        pytest.param("model: 42", "llm.model", "expected a string, got an integer"),
        pytest.param("model: ''", "llm.model", "must not be empty"),
        pytest.param("options: [a]", "llm.options", "expected a mapping, got a list"),
        pytest.param("concurrency: 0", "llm.concurrency", "must be at least 1"),
        pytest.param("concurrency: 1001", "llm.concurrency", "must be at most 1000"),
        pytest.param("temperature: -0.1", "llm.temperature", "must be at least 0"),
        pytest.param("temperature: 2.5", "llm.temperature", "must be at most 2"),
        pytest.param("top_p: 1.01", "llm.top_p", "must be at most 1"),
        pytest.param("max_tokens: 0", "llm.max_tokens", "must be at least 1"),
        pytest.param("timeout: 0", "llm.timeout", "must be at least 0.1"),
        pytest.param("max_response_bytes: 100", "llm.max_response_bytes", "must be at least 1024"),
        pytest.param("max_response_bytes: 4MB", "llm.max_response_bytes", "expected an integer"),
    ],
)
def test_wrong_types_and_ranges_in_llm(
    write_settings: WriteSettings, llm: str, key: str, message: str
) -> None:
    error = config_error(write_settings(f"site: {{title: T}}\nllm:\n  {llm}\n"))
    assert error.key == key
    assert message in str(error)


# The reader's ranges are the only rules a retry policy is checked by (RetryPolicy has none).
@pytest.mark.parametrize(
    ("retry", "key", "message"),
    [
        pytest.param("attempts: 0", "llm.retry.attempts", "must be at least 1"),
        pytest.param("base_delay: -1.0", "llm.retry.base_delay", "must be at least 0"),
        pytest.param("max_delay: .nan", "llm.retry.max_delay", "expected a number"),
        pytest.param("retry_after_cap: -1", "llm.retry.retry_after_cap", "must be at least 0"),
        pytest.param("rate_limit_wait: -1", "llm.retry.rate_limit_wait", "must be at least 0"),
    ],
)
def test_nonsense_retry_settings_are_refused(
    write_settings: WriteSettings, retry: str, key: str, message: str
) -> None:
    error = config_error(write_settings(f"site: {{title: T}}\nllm:\n  retry:\n    {retry}\n"))
    assert error.key == key
    assert message in str(error)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        pytest.param("site: [a]\n", "site", "expected a mapping, got a list", id="site-list"),
        pytest.param("- a\n", None, "expected a mapping, got a list", id="top-list"),
        pytest.param("site: {title: T}\ncache: {enabled: 'yes'}\n", "cache.enabled",
                     "expected true or false, got a string", id="cache-enabled"),
        pytest.param("site: {title: T}\ncache: {ttl: 0}\n", "cache.ttl", "must be at least 1",
                     id="cache-ttl"),
        pytest.param("site: {title: T}\nbuild: {output_dir: ''}\n", "build.output_dir",
                     "must not be empty", id="empty-output"),
        pytest.param("site: {title: T, params: 3}\n", "site.params",
                     "expected a mapping, got an integer", id="params"),
    ],
)  # fmt: skip
def test_wrong_shapes_elsewhere(
    write_settings: WriteSettings, text: str, key: str | None, message: str
) -> None:
    error = config_error(write_settings(text))
    assert error.key == key
    assert message in str(error)


@pytest.mark.parametrize("text", ["site: {}\n", "site: {title: '  '}\n", "llm: {}\n", ""])
def test_site_title_is_required(write_settings: WriteSettings, text: str) -> None:
    error = config_error(write_settings(text))
    assert error.key == "site.title"


def test_invalid_provider_in_file_has_a_hint(write_settings: WriteSettings) -> None:
    error = config_error(write_settings("site: {title: T}\nllm: {provider: olama}\n"))
    assert error.key == "llm.provider"
    assert "'olama' is not one of local, ollama, openai" in str(error)
    assert "did you mean 'ollama'" in str(error)


def test_invalid_provider_in_environment_has_a_hint(write_settings: WriteSettings) -> None:
    error = config_error(write_settings("site: {title: T}\n"), {"LLM_PROVIDER": "opnai"})
    assert (error.path, error.key) == ("environment", "LLM_PROVIDER")
    assert "did you mean 'openai'" in str(error)


@pytest.mark.parametrize("url", ["localhost:11434", "ftp://host", "http://", "not a url"])
def test_bad_api_url_in_file(write_settings: WriteSettings, url: str) -> None:
    text = f"site: {{title: T}}\nllm: {{provider: ollama, api_url: '{url}'}}\n"
    error = config_error(write_settings(text))
    assert error.key == "llm.api_url"
    assert "expected an http(s) URL" in str(error)


def test_bad_api_url_in_environment_names_the_variable(write_settings: WriteSettings) -> None:
    project = write_settings("site: {title: T}\nllm: {provider: ollama}\n")
    error = config_error(project, {"LLM_API_URL": "file:///etc"})
    assert (error.path, error.key) == ("environment", "LLM_API_URL")


@pytest.mark.parametrize("url", ["example.com", "ftp://example.com", "https://", "/relative"])
def test_bad_base_url(write_settings: WriteSettings, url: str) -> None:
    error = config_error(write_settings(f"site: {{title: T, base_url: '{url}'}}\n"))
    assert error.key == "site.base_url"


@pytest.mark.parametrize(
    ("url", "expected"),
    [("https://example.com", "https://example.com/"), ("http://a.b/c//", "http://a.b/c/")],
)
def test_base_url_gets_one_trailing_slash(
    write_settings: WriteSettings, url: str, expected: str
) -> None:
    project = write_settings(f"site: {{title: T, base_url: '{url}'}}\n")
    assert load_settings(project, environ={}).site.base_url == expected


def test_the_file_is_validated_even_where_the_environment_overrides_it(
    write_settings: WriteSettings,
) -> None:
    project = write_settings("site: {title: T}\nllm: {provider: nope}\n")
    error = config_error(project, {"LLM_PROVIDER": "openai"})
    assert error.key == "llm.provider"


# ---------------------------------------------------------------------------- paths


def test_config_path_argument_replaces_the_default_file(tmp_path: Path) -> None:
    project = tmp_path / "site"
    (project / "config").mkdir(parents=True)
    (project / "config" / "settings.yaml").write_text("site: {title: Default}\n")
    other = tmp_path / "other.yaml"
    other.write_text("site: {title: Other}\n")
    settings = load_settings(project, config_path=other, environ={})
    assert settings.site.title == "Other"
    assert settings.config_path == other
    assert settings.project_dir == project.resolve()
    # Paths in the settings stay relative to the project, not to the config file.
    assert settings.build.output_dir == project.resolve() / "output"


def test_relative_config_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "site"
    project.mkdir()
    (tmp_path / "conf.yaml").write_text("site: {title: Relative}\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(project, config_path="conf.yaml", environ={})
    assert settings.site.title == "Relative"
    assert settings.config_path == tmp_path.resolve() / "conf.yaml"


def test_settings_file_may_be_json(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"site": {"title": "J"}, "llm": {"concurrency": 2}}')
    settings = load_settings(tmp_path, config_path=tmp_path / "s.json", environ={})
    assert (settings.site.title, settings.llm.concurrency) == ("J", 2)


def test_error_in_a_config_outside_the_working_folder_shows_its_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "site"
    project.mkdir()
    monkeypatch.chdir(project)
    other = tmp_path / "other.yaml"
    other.write_text("site: {title: T}\nllm: {modle: x}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(project, config_path=other, environ={})
    assert caught.value.path == str(other)


def test_error_in_a_config_outside_the_project_but_in_the_working_folder_is_relative(
    tmp_path: Path,
) -> None:
    project = tmp_path / "site"
    project.mkdir()
    other = tmp_path / "other.yaml"
    other.write_text("site: {title: T}\nllm: {modle: x}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(project, config_path=other, environ={})
    assert caught.value.path == "other.yaml"


def test_paths_are_shown_relative_to_the_working_folder_not_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "site"
    (project / "config").mkdir(parents=True)
    (project / "config" / "settings.yaml").write_text("site: {title: T}\nllm: {modle: x}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(project, environ={})
    assert caught.value.path == str(Path("site") / "config" / "settings.yaml")


def test_error_inside_the_project_shows_a_relative_path(write_settings: WriteSettings) -> None:
    error = config_error(write_settings("site: {title: T}\nllm: {modle: x}\n"))
    assert error.path == str(Path("config") / "settings.yaml")


def test_project_dir_may_be_a_string(write_settings: WriteSettings) -> None:
    project = write_settings("site: {title: T}\n")
    assert load_settings(str(project), environ={}).project_dir == project.resolve()


# ---------------------------------------------------------------------------- overrides


def test_with_overrides_applies_each_choice(
    write_settings: WriteSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write_settings("site: {title: T}\n"), environ={})
    monkeypatch.chdir(tmp_path)
    changed = settings.with_overrides(
        output_dir=Path("cli-out"), concurrency=7, theme="brutalist", cache_enabled=False
    )
    assert changed.build.output_dir == tmp_path.resolve() / "cli-out"
    assert changed.llm.concurrency == 7
    assert changed.build.theme == "brutalist"
    assert changed.cache.enabled is False
    # Frozen: the original is untouched.
    assert settings.llm.concurrency == LLMSettings.concurrency
    assert settings.build.theme == "minimal"
    assert settings.cache.enabled is True


def test_with_overrides_without_choices_changes_nothing(write_settings: WriteSettings) -> None:
    settings = load_settings(write_settings("site: {title: T}\n"), environ={})
    assert settings.with_overrides() == settings


@pytest.mark.parametrize("concurrency", [0, -3])
def test_with_overrides_refuses_concurrency_below_one(
    write_settings: WriteSettings, concurrency: int
) -> None:
    settings = load_settings(write_settings("site: {title: T}\n"), environ={})
    with pytest.raises(ConfigError) as caught:
        settings.with_overrides(concurrency=concurrency)
    assert caught.value.argument == "concurrency"  # the CLI shows it as its flag


def test_with_overrides_refuses_a_negative_max_cost(write_settings: WriteSettings) -> None:
    settings = load_settings(write_settings("site: {title: T}\n"), environ={})
    with pytest.raises(ConfigError) as caught:
        settings.with_overrides(max_cost=-0.5)
    assert caught.value.argument == "max_cost"


# ---------------------------------------------------------------------------- the local provider


@pytest.mark.parametrize(
    ("text", "environ"),
    [
        pytest.param("llm: {provider: local}", {}, id="default"),
        pytest.param("llm: {provider: local, api_url: 'http://a:1'}", {}, id="file-url"),
        pytest.param("llm: {provider: local, api_url: 'not a url'}", {}, id="bad-file-url"),
        pytest.param("llm: {provider: local}", {"LLM_API_URL": "http://a:1"}, id="env-url"),
        pytest.param("llm: {provider: local}", {"LLM_API_URL": "file:///x"}, id="bad-env-url"),
        pytest.param("llm: {api_url: 'http://a:1'}", {"LLM_PROVIDER": "local"}, id="env-provider"),
        # With no provider in the file, the provider is local: a URL is ignored, not checked.
        pytest.param("", {"LLM_API_URL": "http://a:1"}, id="default-env-url"),
        pytest.param("", {"LLM_API_URL": "file:///x"}, id="default-bad-env-url"),
        pytest.param("llm: {model: m.gguf}", {"LLM_API_URL": "not a url"}, id="default-llm"),
        pytest.param("llm: {api_url: 'not a url'}", {}, id="default-bad-file-url"),
    ],
)
def test_the_local_provider_has_no_api_url(
    write_settings: WriteSettings, text: str, environ: dict[str, str]
) -> None:
    project = write_settings(f"site: {{title: T}}\n{text}\n")
    settings = load_settings(project, environ=environ)
    assert settings.llm.provider == "local"
    assert settings.llm.api_url == DEFAULT_API_URLS["local"] == ""


def test_the_default_provider_is_the_local_model(write_settings: WriteSettings) -> None:
    defaults = LLMSettings()
    assert (defaults.provider, defaults.api_url, defaults.model) == ("local", "", "gemma3-270m")
    for text in ("site: {title: T}\n", "site: {title: T}\nllm: {}\n"):
        llm = load_settings(write_settings(text), environ={}).llm
        assert (llm.provider, llm.api_url, llm.model) == ("local", "", "gemma3-270m")
        assert llm.api_key is None


def test_an_http_provider_still_gets_its_default_url(write_settings: WriteSettings) -> None:
    project = write_settings("site: {title: T}\nllm: {provider: ollama}\n")
    llm = load_settings(project, environ={}).llm
    assert (llm.api_url, llm.model) == ("http://localhost:11434", "llama3.2")


def test_base_dir_is_the_project_folder(
    write_settings: WriteSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_settings("site: {title: T}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert LLMSettings().base_dir == elsewhere
    assert load_settings(project, environ={}).llm.base_dir == project.resolve()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_has_its_default_model(write_settings: WriteSettings, provider: str) -> None:
    project = write_settings(f"site: {{title: T}}\nllm: {{provider: {provider}}}\n")
    assert load_settings(project, environ={}).llm.model == DEFAULT_MODELS[provider]


def test_default_models() -> None:
    assert set(DEFAULT_MODELS) == set(PROVIDERS) == {"local", "ollama", "openai", "anthropic"}
    assert DEFAULT_MODELS["local"] == DEFAULT_LOCAL_MODEL == "gemma3-270m"
    assert DEFAULT_MODELS["local"] == LLMSettings.model
    assert DEFAULT_MODELS["ollama"] == "llama3.2"


def test_provider_from_environment_picks_that_providers_default_model(
    write_settings: WriteSettings,
) -> None:
    project = write_settings("site: {title: T}\nllm: {provider: local}\n")
    assert load_settings(project, environ={"LLM_PROVIDER": "openai"}).llm.model == "gpt-4o-mini"
    assert load_settings(project, environ={"LLM_MODEL": "m.gguf"}).llm.model == "m.gguf"


def test_a_model_in_the_file_wins_over_the_providers_default(
    write_settings: WriteSettings,
) -> None:
    project = write_settings("site: {title: T}\nllm: {provider: local, model: models/m.gguf}\n")
    assert load_settings(project, environ={}).llm.model == "models/m.gguf"


def test_local_settings_defaults(write_settings: WriteSettings) -> None:
    llm = load_settings(write_settings("site: {title: T}\n"), environ={}).llm
    assert (llm.style, llm.threads, llm.context, llm.sequences) == ("auto", None, 2048, 4)


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_local_settings_are_read(write_settings: WriteSettings, style: str) -> None:
    project = write_settings(
        f"site: {{title: T}}\nllm: {{provider: local, style: {style}, threads: 2, context: 4096, "
        "sequences: 3}\n"
    )
    llm = load_settings(project, environ={}).llm
    assert (llm.style, llm.threads, llm.context, llm.sequences) == (style, 2, 4096, 3)


@pytest.mark.parametrize(
    ("llm", "key", "message"),
    [
        pytest.param("style: chatt", "llm.style",
                     "'chatt' is not one of auto, chat, completion (did you mean 'chat'?)",
                     id="style-typo"),
        pytest.param("style: completions", "llm.style", "did you mean 'completion'",
                     id="style-plural"),
        pytest.param("style: 3", "llm.style", "expected a string, got an integer",
                     id="style-type"),
        pytest.param("threads: 0", "llm.threads", "must be at least 1", id="threads-zero"),
        pytest.param("threads: 513", "llm.threads", "must be at most 512", id="threads-many"),
        pytest.param("threads: 1.5", "llm.threads", "expected an integer, got a number",
                     id="threads-type"),
        pytest.param("context: 255", "llm.context", "must be at least 256", id="context-small"),
        pytest.param("context: big", "llm.context", "expected an integer, got a string",
                     id="context-type"),
        pytest.param("sequences: 0", "llm.sequences", "must be at least 1", id="sequences-zero"),
        pytest.param("sequences: 5", "llm.sequences", "must be at most 4", id="sequences-many"),
        pytest.param("sequences: 2.5", "llm.sequences", "expected an integer, got a number",
                     id="sequences-type"),
        pytest.param("sequences: eight", "llm.sequences", "expected an integer, got a string",
                     id="sequences-word"),
        pytest.param("sequence: 8", "llm.sequence", "did you mean 'sequences'",
                     id="sequences-typo"),
    ],
)  # fmt: skip
def test_local_settings_are_validated(
    write_settings: WriteSettings, llm: str, key: str, message: str
) -> None:
    error = config_error(write_settings(f"site: {{title: T}}\nllm:\n  provider: local\n  {llm}\n"))
    assert error.key == key
    assert message in str(error)


def test_a_bad_sequences_setting_names_the_file_and_key(write_settings: WriteSettings) -> None:
    error = config_error(write_settings("site: {title: T}\nllm: {sequences: -3}\n"))
    assert (error.path, error.key) == ("config/settings.yaml", "llm.sequences")
    assert str(error) == "config/settings.yaml: llm.sequences: must be at least 1, got -3"


@pytest.mark.parametrize(
    ("provider", "concurrency", "sequences", "in_flight"),
    [
        pytest.param("local", 2, 4, 4, id="local-fills-its-sequences"),
        pytest.param("local", 12, 4, 12, id="local-more-concurrency"),
        pytest.param("ollama", 2, 4, 2, id="servers-keep-concurrency"),
    ],
)
def test_the_embedded_model_is_kept_busy_with_a_block_per_sequence(
    write_settings: WriteSettings, provider: str, concurrency: int, sequences: int, in_flight: int
) -> None:
    project = write_settings(
        f"site: {{title: T}}\nllm: {{provider: {provider}, concurrency: {concurrency}, "
        f"sequences: {sequences}}}\n"
    )
    llm = load_settings(project, environ={}).llm
    assert llm.concurrency == concurrency
    assert llm.in_flight() == in_flight
    assert llm.in_flight("local") == max(concurrency, sequences)
    assert llm.in_flight("ollama") == concurrency


@pytest.mark.parametrize("provider", ["ollama", "openai"])
def test_completion_style_needs_the_local_provider(
    write_settings: WriteSettings, provider: str
) -> None:
    project = write_settings(
        f"site: {{title: T}}\nllm: {{provider: {provider}, style: completion}}\n"
    )
    error = config_error(project)
    assert error.key == "llm.style"
    assert str(error).endswith(
        "llm.style: completion style needs the local provider; servers are sent chat"
    )


def test_completion_style_with_a_provider_from_the_environment(
    write_settings: WriteSettings,
) -> None:
    project = write_settings("site: {title: T}\nllm: {provider: local, style: completion}\n")
    assert load_settings(project, environ={}).llm.style == "completion"
    error = config_error(project, {"LLM_PROVIDER": "ollama"})
    assert error.key == "llm.style"
    assert "completion style needs the local provider" in str(error)


@pytest.mark.parametrize("provider", ["ollama", "openai"])
@pytest.mark.parametrize("style", ["auto", "chat"])
def test_servers_accept_the_chat_styles(
    write_settings: WriteSettings, provider: str, style: str
) -> None:
    project = write_settings(f"site: {{title: T}}\nllm: {{provider: {provider}, style: {style}}}\n")
    llm = load_settings(project, environ={}).llm
    assert (llm.provider, llm.style) == (provider, style)


# --------------------------------------------------------------------------- llm.budget


def test_budget_settings_are_read_with_their_scope_and_ledger(
    write_settings: WriteSettings,
) -> None:
    project = write_settings(
        "site: {title: Mara Quinn}\n"
        "llm:\n"
        "  budget: {daily_tokens: 200000, daily_cost: 2.5}\n"
        "  api_keys:\n"
        "    - {env: KEY_1, rpm: 60, daily_tokens: 50000, daily_cost: 0.5}\n"
    )
    settings = load_settings(project, environ={"KEY_1": SECRET})
    budget = settings.llm.budget
    assert (budget.daily_tokens, budget.daily_cost) == (200_000, 2.5)
    assert budget.scope == "Mara Quinn", "the site's title by default"
    assert budget.ledger == settings.cache.disk.directory / "budget"
    (key,) = settings.llm.keys
    assert (key.limits.daily_tokens, key.limits.daily_cost) == (50_000, 0.5)


def test_budget_scope_can_be_named_and_needs_a_disk_tier_for_its_ledger(
    write_settings: WriteSettings,
) -> None:
    project = write_settings(
        "site: {title: T}\nllm:\n  budget: {scope: team-docs}\ncache: {tiers: [memory]}\n"
    )
    budget = load_settings(project, environ={}).llm.budget
    assert (budget.scope, budget.ledger) == ("team-docs", None)


@pytest.mark.parametrize(
    ("llm", "key", "message"),
    [
        pytest.param(
            "budget: {daily_tokens: lots}", "llm.budget.daily_tokens", "expected an integer"
        ),
        pytest.param("budget: {daily_tokens: 0}", "llm.budget.daily_tokens", "must be at least 1"),
        pytest.param(
            "budget: {daily_tokens: 1.5}", "llm.budget.daily_tokens", "expected an integer"
        ),
        pytest.param("budget: {daily_cost: -1}", "llm.budget.daily_cost", "must be at least 0"),
        pytest.param("budget: {daily_cost: .nan}", "llm.budget.daily_cost", "expected a number"),
        pytest.param("budget: {daily_cost: '5'}", "llm.budget.daily_cost", "expected a number"),
        pytest.param("budget: {scope: ''}", "llm.budget.scope", "must not be empty"),
        pytest.param("budget: {scope: 3}", "llm.budget.scope", "expected a string"),
        pytest.param("budget: {daily_token: 5}", "llm.budget.daily_token", "did you mean"),
        pytest.param("budget: 100", "llm.budget", "expected a mapping"),
        pytest.param(
            "api_keys: [{env: KEY_1, daily_cost: free}]",
            "llm.api_keys[0].daily_cost",
            "expected a number",
        ),
        pytest.param(
            "api_keys: [{env: KEY_1, daily_tokens: -5}]",
            "llm.api_keys[0].daily_tokens",
            "must be at least 1",
        ),
        pytest.param(
            "limits: {daily_tokens: 'x'}", "llm.limits.daily_tokens", "expected an integer"
        ),
    ],
)
def test_bad_budget_values_name_the_key(
    write_settings: WriteSettings, llm: str, key: str, message: str
) -> None:
    error = config_error(write_settings(f"site: {{title: T}}\nllm:\n  {llm}\n"), {"KEY_1": SECRET})
    assert error.key == key
    assert message in str(error)
    assert "settings.yaml" in str(error)
