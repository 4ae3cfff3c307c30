"""Planning a build: one job per block, each with its request fully resolved, including
the system prompt and, for base models, the block framed as a document to continue.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trinity.config import SiteSettings
from trinity.llm.types import CompletionFrame, LLMRequest
from trinity.project import Project
from trinity.site import Block, Page

if TYPE_CHECKING:
    from trinity.llm.client import AsyncLLMClient


@dataclass(frozen=True)
class Job:
    """One block to generate: the page it belongs to, and the request it sends."""

    page: Page
    block: Block
    request: LLMRequest
    key: str


def system_prompt(*parts: str | None) -> str | None:
    """Site, theme voice and block system prompts, joined; None when all are empty."""
    joined = "\n\n".join(p.strip() for p in parts if p and p.strip())
    return joined or None


# Where a base model's continuation of a block ends, by block format: the next heading, a
# run of blank lines, or markup it tends to drift into. A block's `stop` replaces these.
DEFAULT_STOPS = {
    "markdown": ("\n#", "\n\n\n", "<", "```", "\n---", "\n|"),
    "text": ("\n\n", "\n#", "<", "```"),
    "json": (),
}


def completion_frame(site: SiteSettings, page: Page, block: Block) -> CompletionFrame:
    """The block as a document for a base model to continue: the page up to its text.

    The site's title and description, the page's title and description and the block's
    heading give the model its context; the block's `lead` begins the text itself.
    """
    lines = [f"{site.title}: {site.description}" if site.description else site.title, ""]
    lines += [f"# {page.title}", ""]
    if page.description:
        lines += [page.description, ""]
    lines += [f"## {block.heading}", "", block.lead]
    stop = block.stop if block.stop is not None else DEFAULT_STOPS[block.format]
    return CompletionFrame("\n".join(lines), lead=block.lead, stop=stop)


def plan_jobs(project: Project, client: AsyncLLMClient) -> Iterator[Job]:
    """One job per block of every page, with its request fully resolved."""
    voice = project.theme.voice
    site = project.settings.site
    site_system = project.settings.llm.system
    for page in project.site.pages:
        for block in page.blocks:
            request = client.request(
                block.prompt,
                system=system_prompt(site_system, voice, block.system),
                model=block.model,
                temperature=block.temperature,
                max_tokens=block.max_tokens,
                response_format="json" if block.format == "json" else "text",
                json_schema=dict(block.schema) if block.schema is not None else None,
                frame=completion_frame(site, page, block),
            )
            yield Job(page=page, block=block, request=request, key=client.key(request))
