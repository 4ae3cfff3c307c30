"""The site model: content/pages.yaml and content/data/, expanded into concrete pages.

`load_site` reads and validates everything, expands collections (one page per data item)
and renders every prompt in a sandboxed Jinja environment, so that every mistake in the
content surfaces before the first LLM call.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from trinity.checks.spec import CheckSpec
from trinity.checksettings import overlay, read_checks
from trinity.config import Settings
from trinity.errors import ConfigError, ContentError
from trinity.messages import shown_path
from trinity.projectfiles import DATA_DIR, PAGES_FILE
from trinity.schema import REQUIRED, Fields, describe
from trinity.yamlfile import load_data_file

DATA_SUFFIXES = (".yaml", ".yml", ".json")
BLOCK_FORMATS = ("markdown", "text", "json")
INDEX_SLUG = "index"

# Lowercase letters, digits, '-' and '_' in '/'-separated segments. No dots at all, so no
# '..', no file extensions, and no way to name a path outside the output folder.
_SLUG_PATTERN = re.compile(r"[a-z0-9_-]+(?:/[a-z0-9_-]+)*")
# First path segments that belong to the site's own files.
RESERVED_SLUG_ROOTS = frozenset({"static"})


@dataclass(frozen=True)
class Block:
    """One content block of a page, its prompt already rendered."""

    name: str
    prompt: str
    format: str = "markdown"
    max_tokens: int | None = None
    temperature: float | None = None
    system: str | None = None
    schema: Mapping[str, Any] | None = None
    # For base models, which continue a document instead of following the prompt: the
    # section heading the block sits under, the opening words of its text, and where to stop.
    heading: str = ""
    lead: str = ""
    stop: tuple[str, ...] | None = None
    model: str | None = None  # a model or alias for this block; None: llm.model
    # Whether an answer to a similar earlier prompt may serve it (the semantic cache);
    # None: as `cache.semantic.enabled` says.
    semantic: bool | None = None
    # The site's checks overlaid by the block's own, its mentions rendered for this page.
    checks: CheckSpec = field(default_factory=CheckSpec)


@dataclass(frozen=True)
class Page:
    """One output page: where it goes, how it looks, and what it asks the model."""

    slug: str
    title: str
    template: str
    blocks: tuple[Block, ...]
    description: str = ""
    collection: str | None = None
    item: Any = None
    source: str = ""  # the key path in pages.yaml that made this page, for messages
    origin: str = ""  # which collection item made it, for messages: " (item 2 of 'projects')"

    @functools.cached_property
    def facts(self) -> Mapping[str, str]:
        """What a collection page's data says about its item: the item's plain fields (text,
        numbers, true/false) as one-line strings, in the data file's order; {} for other
        pages. What grounds the model's answer (framed into its prompt), what the input
        guards read, and what the judge holds the answer to.

        Nested data and blank values are left out; so is an item that is not a mapping.
        """
        if self.collection is None or not isinstance(self.item, Mapping):
            return MappingProxyType({})
        facts = {}
        for key, value in self.item.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str | int | float):
                text = " ".join(str(value).split())
            else:
                continue
            if text:
                facts[" ".join(str(key).split())] = text
        return MappingProxyType(facts)

    @property
    def url(self) -> str:
        """The page's URL relative to the site root: '' for the home page, else 'slug/'."""
        return "" if self.slug == INDEX_SLUG else f"{self.slug}/"

    @property
    def output_path(self) -> str:
        """The file the page is written to, relative to the output folder."""
        return "index.html" if self.slug == INDEX_SLUG else f"{self.slug}/index.html"


@dataclass(frozen=True)
class Site:
    settings: Settings
    pages: tuple[Page, ...]
    data: Mapping[str, Any]

    @property
    def block_count(self) -> int:
        return sum(len(page.blocks) for page in self.pages)


def slug_problem(slug: str) -> str | None:
    """Why `slug` is unsafe or invalid, or None when it is fine."""
    if not slug:
        return "is empty"
    if slug.startswith("/"):
        return "must be relative (no leading '/')"
    if ".." in slug:
        return "must not contain '..'"
    if not _SLUG_PATTERN.fullmatch(slug):
        return "may only contain lowercase letters, digits, '-', '_' and '/' between segments"
    if slug.split("/", 1)[0] in RESERVED_SLUG_ROOTS:
        return f"must not start with a reserved folder ({', '.join(sorted(RESERVED_SLUG_ROOTS))})"
    return None


def slugify(value: Any) -> str:
    """'Über Café 2' -> 'uber-cafe-2': a filter for slug templates."""
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _prompt_environment() -> ImmutableSandboxedEnvironment:
    # Sandboxed: prompts come from content files, and may read data written by others.
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
    )
    env.filters["slugify"] = slugify
    return env


def load_data(project_dir: Path) -> dict[str, Any]:
    """Every file in content/data/, by name without extension."""
    data: dict[str, Any] = {}
    folder = project_dir / DATA_DIR
    if not folder.is_dir():
        return data
    for path in sorted(folder.iterdir()):
        if path.suffix not in DATA_SUFFIXES or not path.is_file():
            continue
        if path.stem in data:
            raise ContentError(
                f"two data files are named '{path.stem}'; keep one",
                path=shown_path(path),
            )
        data[path.stem] = load_data_file(path, ContentError)
    return data


def load_site(settings: Settings) -> Site:
    """Read, validate and expand the site's pages; render every prompt."""
    project = settings.project_dir
    data = load_data(project)
    shown = shown_path(project / PAGES_FILE)
    top = Fields(
        load_data_file(project / PAGES_FILE, ContentError),
        path=shown,
        key="",
        error=ContentError,
        optional=False,
    )
    raw_pages = top.value("pages", None)
    top.done()
    if not isinstance(raw_pages, list) or not raw_pages:
        raise ContentError(
            f"expected a non-empty list of pages, got {describe(raw_pages)}",
            path=shown,
            key="pages",
        )
    planner = _Planner(settings, data, shown)
    pages: list[Page] = []
    for index, raw in enumerate(raw_pages):
        pages.extend(
            planner.expand(
                Fields(raw, path=shown, key=f"pages[{index}]", error=ContentError, optional=False)
            )
        )
    _check_unique_slugs(pages, shown)
    return Site(settings=settings, pages=tuple(pages), data=MappingProxyType(data))


def _check_unique_slugs(pages: Sequence[Page], shown: str) -> None:
    first_by_slug: dict[str, Page] = {}
    for page in pages:
        earlier = first_by_slug.setdefault(page.slug, page)
        if earlier is not page:
            raise ContentError(
                f"slug '{page.slug}'{page.origin} is used twice: also by "
                f"{earlier.source}{earlier.origin}",
                path=shown,
                key=page.source,
            )


@dataclass(frozen=True)
class _Fixed:
    """A template with no template syntax in it: rendered as itself, without Jinja (whose
    every render sets up a context, a cost that adds up over a large site's headings)."""

    text: str

    @classmethod
    def of(cls, source: str) -> _Fixed:
        """`source` with its line breaks made "\\n", as Jinja makes them."""
        return cls(source.replace("\r\n", "\n").replace("\r", "\n"))

    def render(self, context: Mapping[str, Any]) -> str:
        return self.text


_Compiled = jinja2.Template | _Fixed


@dataclass(frozen=True)
class _BlockSpec:
    """A block as written in pages.yaml, its prompt compiled but not yet rendered."""

    name: str
    key: str
    prompt: _Compiled
    system: _Compiled | None
    heading: _Compiled
    lead: _Compiled | None
    stop: tuple[str, ...] | None
    model: str | None
    format: str
    max_tokens: int | None
    temperature: float | None
    schema: Mapping[str, Any] | None
    semantic: bool | None
    checks: CheckSpec  # mentions still as written: `mentions` renders them per page
    mentions: _Mentions


@dataclass(frozen=True)
class _Mentions:
    """`mentions` templates, and where they were written (the block's checks, or the
    site's in settings.yaml) for messages."""

    templates: tuple[_Compiled, ...]
    path: str
    key: str


class _Planner:
    """Turns one entry of pages.yaml into pages, rendering its templates per item."""

    def __init__(self, settings: Settings, data: Mapping[str, Any], shown: str) -> None:
        self.settings = settings
        self.data = data
        self.shown = shown
        self.env = _prompt_environment()
        self.site_context = settings.site.as_context()
        site_checks = Fields(
            None, path=shown_path(settings.config_path), key="checks", error=ConfigError
        )
        self.site_mentions = self._compile_mentions(site_checks, settings.checks.mentions)

    def compile(self, f: Fields, name: str, source: str) -> _Compiled:
        if "{" not in source:  # no {{ }}, {% %} or {# #}: the text is its own rendering
            return _Fixed.of(source)
        try:
            return self.env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise f.fail(
                f"template syntax error at line {exc.lineno}: {exc.message}", name
            ) from None

    def render(
        self,
        template: _Compiled,
        key: str,
        context: Mapping[str, Any],
        where: str,
        path: str | None = None,
    ) -> str:
        """`template` rendered; an error names `key` in `path` (pages.yaml by default)."""
        try:
            return template.render(context).strip()
        except jinja2.UndefinedError as exc:
            message = f"unknown variable in template{where}: {exc.message}"
        except jinja2.TemplateError as exc:
            message = f"template error{where}: {exc}"
        except (TypeError, ValueError, ArithmeticError) as exc:
            message = f"template error{where}: {exc}"
        raise ContentError(message, path=path or self.shown, key=key)

    def expand(self, f: Fields) -> list[Page]:
        collection = f.string("collection", None, nonempty=True)
        slug_template = self.compile(f, "slug", f.string("slug", nonempty=True))
        title_source = f.string("title", None if collection else REQUIRED, nonempty=True)
        default_title = "{{ item.title if item.title is defined else item.name }}"
        title_template = self.compile(f, "title", title_source or default_title)
        description_template = self.compile(f, "description", f.string("description", ""))
        template = f.string("template", None, nonempty=True)
        blocks = self._read_blocks(
            Fields(f.value("blocks"), path=self.shown, key=f.at("blocks"), error=ContentError)
        )
        f.done()
        if collection is None:
            items: list[tuple[Any, str]] = [(None, "")]
            default_template = "index.html" if f.raw["slug"] == INDEX_SLUG else "page.html"
        else:
            items = [
                (item, f" (item {n + 1} of '{collection}')")
                for n, item in enumerate(self._collection_items(f, collection))
            ]
            default_template = "item.html"
        pages = []
        for item, where in items:
            page_context = {"site": self.site_context, "data": self.data, "item": item}
            slug = self.render(slug_template, f.at("slug"), page_context, where)
            problem = slug_problem(slug)
            if problem:
                raise f.fail(f"slug '{slug}'{where} {problem}", "slug")
            title = self.render(title_template, f.at("title"), page_context, where)
            page_context["page"] = {"slug": slug, "title": title, "collection": collection}
            description = self.render(
                description_template, f.at("description"), page_context, where
            )
            pages.append(
                Page(
                    slug=slug,
                    title=title,
                    template=template or default_template,
                    blocks=tuple(self._render_block(spec, page_context, where) for spec in blocks),
                    description=description,
                    collection=collection,
                    item=item,
                    source=f.key,
                    origin=where,
                )
            )
        return pages

    def _collection_items(self, f: Fields, collection: str) -> list[Any]:
        if collection not in self.data:
            raise f.fail(
                f"no data file '{collection}' in {DATA_DIR}/ (looked for "
                + ", ".join(collection + suffix for suffix in DATA_SUFFIXES)
                + ")",
                "collection",
            )
        items = self.data[collection]
        if not isinstance(items, list):
            raise f.fail(
                f"data '{collection}' must be a list to be a collection, got {describe(items)}",
                "collection",
            )
        return items

    def _read_blocks(self, f: Fields) -> list[_BlockSpec]:
        specs = [self._read_block(f, name) for name in f.raw]
        f.done()
        return specs

    def _read_block(self, parent: Fields, name: str) -> _BlockSpec:
        raw = parent.value(name)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise parent.fail("block names must be identifiers (letters, digits, '_')", name)
        f = Fields(
            {"prompt": raw} if isinstance(raw, str) else raw,
            path=self.shown,
            key=parent.at(name),
            error=ContentError,
            optional=False,
        )
        prompt = self.compile(f, "prompt", f.string("prompt", nonempty=True))
        system_source = f.string("system", None)
        heading_source = f.string("heading", name.replace("_", " ").capitalize(), nonempty=True)
        lead_source = f.string("lead", None)
        block_format = f.string("format", "markdown", choices=BLOCK_FORMATS)
        schema = f.mapping("schema") if f.has("schema") else None
        if schema is not None:
            if block_format != "json":
                raise f.fail("only json blocks take a schema", "schema")
            import jsonschema  # here: slow to import, and few sites have schemas

            dialect = schema.get("$schema")
            if "$schema" in schema and (
                not isinstance(dialect, str)
                # default=None: None back for a dialect jsonschema does not know.
                or jsonschema.validators.validator_for(schema, default=cast(Any, None)) is None
            ):
                # jsonschema would crash on a non-string, and only warn on an unknown one.
                raise f.fail(f"unknown $schema {dialect!r}", "schema")
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise f.fail(f"not a valid JSON schema: {exc.message}", "schema") from None
        checks, mentions = self._read_checks(f)
        spec = _BlockSpec(
            name=name,
            key=f.key,
            prompt=prompt,
            system=self.compile(f, "system", system_source) if system_source else None,
            heading=self.compile(f, "heading", heading_source),
            lead=self.compile(f, "lead", lead_source) if lead_source else None,
            stop=f.strings("stop"),
            model=f.string("model", None, nonempty=True),
            format=block_format,
            max_tokens=f.integer("max_tokens", None, minimum=1, maximum=1_000_000),
            temperature=f.number("temperature", None, minimum=0, maximum=2),
            schema=schema,
            semantic=self._read_semantic(f),
            checks=checks,
            mentions=mentions,
        )
        f.done()
        return spec

    def _read_semantic(self, block: Fields) -> bool | None:
        """The block's `semantic`: true only where the semantic cache can serve it (an
        embedder named, and temperature 0: the only answers it ever shares)."""
        semantic = block.value("semantic", None)
        if semantic is None or semantic is False:
            return semantic
        if semantic is not True:
            raise block.fail(f"expected true or false, got {describe(semantic)}", "semantic")
        llm = self.settings.llm
        if llm.semantic.embedder is None:
            raise block.fail(
                f"{llm.provider} has no embeddings endpoint: name one under "
                "cache.semantic.embedder in settings.yaml",
                "semantic",
            )
        temperature = block.raw.get("temperature", llm.temperature)
        if temperature != 0:
            raise block.fail(
                f"the semantic cache serves only blocks at temperature 0 (this one: "
                f"{temperature}); set temperature: 0",
                "semantic",
            )
        return True

    def _read_checks(self, block: Fields) -> tuple[CheckSpec, _Mentions]:
        """The block's `checks` over the site's, and the mentions that apply to it."""
        f = block.child("checks")
        changes = read_checks(f)
        mentions = self.site_mentions
        if "mentions" in changes:
            mentions = self._compile_mentions(f, changes["mentions"])
        return overlay(self.settings.checks, changes), mentions

    def _compile_mentions(self, f: Fields, sources: Sequence[str]) -> _Mentions:
        templates = tuple(
            self.compile(f, f"mentions[{index}]", source) for index, source in enumerate(sources)
        )
        return _Mentions(templates, f.path, f.at("mentions"))

    def _nonempty(
        self,
        template: _Compiled,
        key: str,
        context: Mapping[str, Any],
        where: str,
        path: str | None = None,
    ) -> str:
        text = self.render(template, key, context, where, path)
        if not text:
            raise ContentError(f"renders to nothing{where}", path=path or self.shown, key=key)
        return text

    def _block_checks(self, spec: _BlockSpec, context: Mapping[str, Any], where: str) -> CheckSpec:
        """The block's checks with its mentions rendered for this page."""
        mentions = spec.mentions
        if not mentions.templates:
            return spec.checks
        # Each must say something: an empty mention would be found in every answer.
        rendered = tuple(
            self._nonempty(template, f"{mentions.key}[{index}]", context, where, mentions.path)
            for index, template in enumerate(mentions.templates)
        )
        return replace(spec.checks, mentions=rendered)

    def _render_block(self, spec: _BlockSpec, context: Mapping[str, Any], where: str) -> Block:
        prompt = self._nonempty(spec.prompt, f"{spec.key}.prompt", context, where)
        system = (
            self.render(spec.system, f"{spec.key}.system", context, where) if spec.system else None
        )
        return Block(
            name=spec.name,
            prompt=prompt,
            format=spec.format,
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            system=system or None,
            schema=spec.schema,
            heading=self._nonempty(spec.heading, f"{spec.key}.heading", context, where),
            lead=self.render(spec.lead, f"{spec.key}.lead", context, where) if spec.lead else "",
            stop=spec.stop,
            model=spec.model,
            semantic=spec.semantic,
            checks=self._block_checks(spec, context, where),
        )
