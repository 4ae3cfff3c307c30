"""A headless Chromium that looks at built pages: the layout guardian's eyes.

`find_chromium()` says which browser to run. `LayoutBrowser` serves the site read-only on
a loopback port (trinity/layout/server.py), launches one Chromium for the whole session,
and checks pages in a few tabs at once.

Each tab holds a small harness page with one iframe, and the iframe is the viewport:
every page is opened once, in the iframe, and probe.js resizes the iframe to each width
in turn and measures the page there, all widths in one call into the page. Measured on
two cores (benchmarks/guard.py), a page loaded into an iframe costs the browser about
65 ms of CPU against 80 for a tab's own navigation, and a new width about 6 ms against
19 for resizing a tab's viewport; with axe-core's work cut down (probe.js says how) that
is 1,000 pages at three widths in about 40 s. Navigating a tab to each page, resizing its
viewport and running axe-core at every width took 280 s. The iframe is sandboxed without
`allow-top-navigation`, `allow-popups` or `allow-modals`, so a page can neither navigate
the harness away nor stop it with a dialog.

probe.js finds overflow, clipping, wrapped headings and long blocks; axe-core
(trinity/layout/axe.py) low contrast, small tap targets and images without alt text, at
one width (see AXE_WIDTH); the tab's console and network events give console errors and
failed assets.

Nothing leaves the machine. Chromium is given a proxy that does not exist (a loopback
port we hold and never listen on) for every address but the site's server, so anything
else a page asks for fails at once, whatever its scheme or host; no host name is
resolved; and Chromium's own background traffic (updates, sync, field trials) is off.
(Playwright's page.route could abort those requests too, but once any route is set it
intercepts every request, the site's own included: 50 ms more a page.)

Playwright is imported only when a browser is started, so importing this module costs
nothing where the guard extra is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from trinity.errors import MissingDependencyError, TrinityError
from trinity.layout.axe import RULE_KINDS, axe_source
from trinity.layout.findings import (
    ASSET_FAILED,
    CONSOLE_ERROR,
    WIDTHS,
    Finding,
    LayoutLimits,
)
from trinity.layout.gallery import screenshot_name
from trinity.layout.probe import (
    ProbeAnswerError,
    axe_arguments,
    measured,
    probe_arguments,
    probe_findings,
    probe_source,
)
from trinity.layout.server import LOOPBACK, SiteServer
from trinity.logs import get_logger
from trinity.messages import one_line, shown_path

if TYPE_CHECKING:
    from playwright.async_api import (
        BrowserContext,
        ConsoleMessage,
        Frame,
        Page,
        Request,
        Response,
    )
    from playwright.async_api import Error as PlaywrightError

log = get_logger(__name__)

CHROMIUM_ENV = "TRINITY_CHROMIUM"
# Looked for on PATH in this order when neither a setting nor CHROMIUM_ENV names one.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "install Chromium (Debian/Ubuntu: `sudo apt-get install chromium`; macOS: "
    "`brew install --cask chromium`) and the guard extra (`pip install 'trinity[guard]'`), "
    f"or set {CHROMIUM_ENV} to a Chromium or Chrome binary"
)

# Root in a container has no sandbox to drop into and often a small /dev/shm; a closed
# network must see no traffic at all: no updates, sync, QUIC probes or name lookups
# (every host name fails to resolve; the site is served on an address, not a name).
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {LOOPBACK}",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
)

# axe-core runs at this width only (or the narrowest asked for), all three rules: a run
# costs 60-75 ms, more than the rest of a page's check, and the colours and alt text it
# judges do not change with the width in the themes Trinity ships; target-size is a
# phone's concern anyway.
AXE_WIDTH = 390
# What every check waits for at most, in seconds: a load, the probe, a screenshot.
DEFAULT_TIMEOUT = 30.0
# Starting Chromium takes a second here, and much longer on a loaded CI machine.
LAUNCH_TIMEOUT = 60.0
# Closing the browser must not hang an interrupted build.
CLOSE_TIMEOUT = 10.0
# The longest console message kept in a finding.
MAX_MESSAGE = 300
# The harness: one iframe, the viewport the pages are shown in. Its sandbox lets the page
# run its scripts and reach its own origin, but not navigate the harness, open pop-ups
# or dialogs (a page that tries logs a console error, which is reported).
HARNESS = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Trinity layout check</title>
<style>html, body { margin: 0; padding: 0; } iframe { display: block; border: 0; }</style>
</head>
<body><iframe name="view" title="The page being checked"
  sandbox="allow-scripts allow-same-origin allow-forms"></iframe></body>
</html>
"""
# The harness's viewport: room for the widest width (an iframe may be wider; it is
# still laid out, and its top left corner stays on screen).
HARNESS_VIEWPORT = {"width": 1280, "height": 1024}


class BrowserError(TrinityError):
    """The browser could not start, or could not check a page (the message names it)."""


# ---------------------------------------------------------------------- finding the browser


def find_chromium(explicit: str | None = None) -> Path:
    """The Chromium (or Chrome) to run: `explicit` (a setting or flag), else the
    TRINITY_CHROMIUM environment variable, else the first of CHROMIUM_NAMES on PATH.

    Each may be a path or a command name. MissingDependencyError, with what to install,
    when there is none or Playwright (the guard extra) is not installed.
    """
    _require_playwright()
    if explicit:
        return _executable(explicit, f"the browser {explicit!r}")
    from_environment = os.environ.get(CHROMIUM_ENV, "").strip()
    if from_environment:
        return _executable(from_environment, f"{CHROMIUM_ENV}={from_environment!r}")
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    raise MissingDependencyError(
        f"the layout guardian needs Chromium or Chrome, and none of {', '.join(CHROMIUM_NAMES)} "
        f"is on PATH; {INSTALL_HINT}"
    )


def _require_playwright() -> None:
    if importlib.util.find_spec("playwright") is None:
        raise MissingDependencyError(
            f"the layout guardian needs Playwright, which is not installed; {INSTALL_HINT}"
        )


def _executable(value: str, named: str) -> Path:
    """`value` as a runnable file: a path as given, a bare name looked up on PATH."""
    if os.sep in value or "/" in value:
        path = Path(value).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
    else:
        found = shutil.which(value)
        if found is not None:
            return Path(found)
    raise MissingDependencyError(f"{named} is not a program that can be run; {INSTALL_HINT}")


# ---------------------------------------------------------------------- a check's plan


def viewport(width: int) -> tuple[int, int]:
    """A viewport `width` wide, as tall as a device of that width usually is (what `vh`
    units and the first screen of a screenshot come to)."""
    if width < 600:
        return (width, 844)
    if width < 1000:
        return (width, 1024)
    return (width, 800)


@dataclass(frozen=True)
class _Plan:
    """What one `check` call asks of every page: the probe's argument for the widths in
    the order given and in reverse (tabs sweep back and forth, page after page, so each
    page starts at the width the last one ended at)."""

    limits: LayoutLimits
    widths: tuple[int, ...]
    screenshots: Path | None
    label: str
    forward: dict[str, Any] = field(init=False)
    backward: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        axe_width = AXE_WIDTH if AXE_WIDTH in self.widths else min(self.widths)
        rules = list(RULE_KINDS)
        sizes = [viewport(width) for width in self.widths]
        forward = probe_arguments(self.limits, sizes, viewport(axe_width), rules)
        backward = probe_arguments(self.limits, sizes[::-1], viewport(axe_width), rules)
        object.__setattr__(self, "forward", forward)
        object.__setattr__(self, "backward", backward)

    def sweep(self, width_now: int) -> tuple[tuple[int, ...], dict[str, Any]]:
        """The widths in the order to measure them, starting where the iframe is, and
        the probe's argument for that order."""
        if len(self.widths) > 1 and width_now == self.widths[-1]:
            return self.widths[::-1], self.backward
        return self.widths, self.forward


# ---------------------------------------------------------------------- one tab


class _Tab:
    """One browser tab: the harness, and its iframe, which shows pages one after another.

    Its listeners record, for the page being checked, the console errors, uncaught
    errors and failed requests to the site's own server; `begin` starts a new page.
    """

    def __init__(self, origin: str, own_prefix: str) -> None:
        self.origin = origin
        self.own_prefix = own_prefix  # the guardian's files: never the page's business
        self.harness_url = own_prefix + "harness.html"
        self.axe_url = own_prefix + "axe.min.js"
        self.page_path = ""
        self.width = 0  # the width events are told at: the page's first
        self.frame_width = 0  # the iframe's width now
        self.events: list[Finding] = []
        self._seen: set[tuple[str, str]] = set()
        self._page: Page | None = None
        self._view: Frame | None = None

    @property
    def page(self) -> Page:
        """The harness."""
        if self._page is None:
            raise RuntimeError("the tab is closed")
        return self._page

    @property
    def view(self) -> Frame:
        """The harness's iframe, in which pages are shown."""
        if self._view is None:
            raise RuntimeError("the tab is closed")
        return self._view

    async def open(self, context: BrowserContext) -> None:
        """A new harness page (after a page hung or crashed: in place of the old one)."""
        await self.close()
        page = await context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_request_failed)
        await page.goto(self.harness_url, wait_until="load")
        view = page.frame(name="view")
        if view is None:
            raise BrowserError("the layout harness has no iframe")
        self._page, self._view, self.frame_width = page, view, 0

    async def close(self) -> None:
        if self._page is not None:
            with suppress(Exception), anyio.move_on_after(CLOSE_TIMEOUT):
                await self._page.close(run_before_unload=False)
        self._page = self._view = None

    def begin(self, page_path: str, width: int) -> None:
        self.page_path = page_path
        self.width = width
        self.events = []
        self._seen = set()

    def _record(self, kind: str, detail: str, about: str | None = None) -> None:
        """Note a finding once per page: per message, or per file (`about`) for assets,
        whose one failure Chromium may report twice (a 404, then the aborted load)."""
        key = (kind, detail if about is None else about)
        if not self.page_path or key in self._seen:
            return
        self._seen.add(key)
        self.events.append(
            Finding(
                page=self.page_path,
                width=self.width,
                kind=kind,
                block=None,
                element="",
                detail=detail,
            )
        )

    def _own(self, url: str) -> str | None:
        """The path of `url` on the site's server, or None for any other address (and
        for the guardian's own files)."""
        prefix = self.origin + "/"
        if not url.startswith(prefix) or url.startswith(self.own_prefix):
            return None
        return url[len(prefix) :].split("?", 1)[0]

    def _is_the_page(self, request: Request) -> bool:
        """Whether `request` fetched a document of the tab (the harness or the page
        under check), as opposed to one of the page's assets."""
        try:
            return request.is_navigation_request() and request.frame in (
                self.page.main_frame,
                self.view,
            )
        except Exception:  # a request of a frame already gone: not the page
            return False

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        text = _shorten(message.text)
        # A resource that failed says so here too; the network events tell it better,
        # and tell the site's own files from the outside requests that were refused.
        if text.startswith("Failed to load resource") or self.own_prefix in text:
            return  # (the second: the page's Content-Security-Policy refused axe-core)
        where = self._own(str(message.location.get("url", ""))) or ""
        line = message.location.get("lineNumber")
        if where and line is not None:
            where = f"{where}:{int(line) + 1}"
        self._record(CONSOLE_ERROR, f"console error{f' ({where})' if where else ''}: {text}")

    def _on_page_error(self, error: PlaywrightError) -> None:
        name = getattr(error, "name", "") or "Error"
        self._record(CONSOLE_ERROR, f"uncaught {name}: {_shorten(error.message)}")

    def _on_response(self, response: Response) -> None:
        path = self._own(response.url)
        if path is None or response.status < 400 or self._is_the_page(response.request):
            return
        self._record(ASSET_FAILED, f"/{path} did not load: HTTP {response.status}", path)

    def _on_request_failed(self, request: Request) -> None:
        path = self._own(request.url)
        if path is None or self._is_the_page(request):
            return
        reason = request.failure or "failed"
        self._record(ASSET_FAILED, f"/{path} did not load: {reason}", path)


def _shorten(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1].rstrip() + "…"


# ---------------------------------------------------------------------- the session


class LayoutBrowser:
    """One Chromium and a loopback server for a site, for as long as the `async with`.

        async with LayoutBrowser(site_dir, chromium=find_chromium()) as browser:
            findings = await browser.check(["index.html"], limits)

    `parallel` tabs check pages at once; `timeout` (seconds) bounds every load, probe
    and screenshot, so a page that never finishes loading gives a finding and a probe
    that never returns an error, never a hang.
    """

    def __init__(
        self,
        site: Path | Sequence[Path],
        *,
        chromium: Path,
        parallel: int = 4,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        # The site's folders, looked in in order: a build's staging folder, then the
        # output folder that holds the pages it kept unchanged.
        self.folders = (site,) if isinstance(site, Path) else tuple(site)
        self.chromium = chromium
        self.parallel = parallel
        self.timeout = timeout
        self._stack = AsyncExitStack()
        self._server: SiteServer | None = None
        self._context: BrowserContext | None = None
        self._own_prefix = ""
        self._tabs: list[_Tab] = []
        # The tabs serve one check at a time.
        self._checking = anyio.Lock()

    # ------------------------------------------------------------------ start and stop

    async def __aenter__(self) -> LayoutBrowser:
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()

    async def _start(self) -> None:
        try:
            from playwright.async_api import Error as PlaywrightError
            from playwright.async_api import async_playwright
        except ImportError as exc:
            raise MissingDependencyError(
                f"the layout guardian needs Playwright, which is not installed; {INSTALL_HINT}"
            ) from exc
        # The guardian's own files, under a folder no site has (and a name of its own
        # for each session, so the browser may cache axe-core's script and its code).
        own = f"/.trinity-layout-{secrets.token_hex(8)}/"
        extra = {own + "harness.html": HARNESS, own + "axe.min.js": axe_source().encode()}
        server = self._stack.enter_context(SiteServer(self.folders, extra))
        self._server = server
        self._own_prefix = server.origin + own
        nowhere = self._stack.enter_context(_closed_port())
        playwright = await self._stack.enter_async_context(async_playwright())
        try:
            browser = await playwright.chromium.launch(
                executable_path=self.chromium,
                headless=True,
                args=[*CHROMIUM_FLAGS, *_proxy_flags(server.port, nowhere)],
                timeout=LAUNCH_TIMEOUT * 1000,
            )
        except PlaywrightError as exc:
            raise BrowserError(
                f"{shown_path(self.chromium)} did not start: {one_line(exc)}; {INSTALL_HINT}"
            ) from exc
        self._stack.push_async_callback(browser.close)
        log.debug("layout browser started: %s %s", shown_path(self.chromium), browser.version)
        context = await browser.new_context(
            viewport=HARNESS_VIEWPORT,  # type: ignore[arg-type]
            device_scale_factor=1,
            service_workers="block",
        )
        context.set_default_timeout(self.timeout * 1000)
        self._context = context

    async def _close(self) -> None:
        """Close tabs, browser, Playwright and server, even when cancelled or failing."""
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(CLOSE_TIMEOUT),
            suppress(Exception),
        ):
            await self._stack.aclose()
        self._tabs = []
        self._context = None
        self._server = None

    # ------------------------------------------------------------------ checking pages

    async def check(
        self,
        pages: Sequence[str],
        limits: LayoutLimits,
        *,
        widths: Sequence[int] = WIDTHS,
        screenshots: Path | None = None,
        label: str = "",
        on_page: Callable[[str], None] | None = None,
    ) -> dict[str, list[Finding]]:
        """Every page's findings at every width ([] for a clean page), pages in the order
        given. `pages` are files relative to the site ("about/index.html").

        With `screenshots`, a page with findings is also shot whole at every width, to
        `screenshots / screenshot_name(page, width, label)`. FileNotFoundError when a
        page is not in the site; BrowserError when a page could not be measured.
        `on_page` hears each page as its check ends (a progress bar).
        """
        if not widths:
            raise ValueError("check needs at least one width")
        ordered = list(dict.fromkeys(pages))
        for page in ordered:
            self._page_file(page)
        plan = _Plan(limits, tuple(widths), screenshots, label)
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
        async with self._checking:
            return await self._check_all(ordered, plan, on_page)

    async def _check_all(
        self, ordered: list[str], plan: _Plan, on_page: Callable[[str], None] | None
    ) -> dict[str, list[Finding]]:
        """Every page of `ordered`, each in the first tab free: BrowserError stops all."""
        results: dict[str, list[Finding]] = {page: [] for page in ordered}
        await self._ensure_tabs(min(self.parallel, len(ordered)))
        queue = iter(ordered)
        failures: list[BrowserError] = []

        async def work(tab: _Tab) -> None:
            for page in queue:  # shared: each page goes to the first free tab
                try:
                    results[page] = await self._check_page(tab, page, plan)
                    if on_page is not None:
                        on_page(page)
                except BrowserError as exc:
                    failures.append(exc)
                    group.cancel_scope.cancel()
                    return

        async with anyio.create_task_group() as group:
            for tab in self._tabs[: len(ordered)]:
                group.start_soon(work, tab)
        if failures:
            raise failures[0]
        return results

    async def screenshot(self, page: str, width: int, path: Path) -> None:
        """A full-page PNG of `page` at `width`, opened in a tab of its own, to `path`."""
        self._page_file(page)
        await self._shoot(page, [(width, path)])

    # ------------------------------------------------------------------ the parts

    def _page_file(self, page: str) -> Path:
        """The file of `page` in the site; FileNotFoundError or ValueError if it is not."""
        relative = PurePosixPath(page)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"{page!r} is not a page path inside the site")
        for folder in self.folders:
            path = folder.joinpath(*relative.parts)
            if path.is_file():
                return path
        shown = shown_path(self.folders[0].joinpath(*relative.parts))
        raise FileNotFoundError(f"{shown}: no such page to check")

    def _require_context(self) -> BrowserContext:
        if self._context is None or self._server is None:
            raise RuntimeError("LayoutBrowser is used outside its `async with`")
        return self._context

    def _url(self, page: str) -> str:
        assert self._server is not None
        return self._server.url_for(page)

    async def _ensure_tabs(self, count: int) -> None:
        context = self._require_context()
        assert self._server is not None
        while len(self._tabs) < count:
            tab = _Tab(self._server.origin, self._own_prefix)
            await tab.open(context)
            self._tabs.append(tab)

    async def _check_page(self, tab: _Tab, page: str, plan: _Plan) -> list[Finding]:
        order, arguments = plan.sweep(tab.frame_width)
        tab.begin(page, order[0])
        failure = await self._load(tab, page, order[0])
        if failure is not None:
            await tab.open(self._require_context())
            return [failure]
        tab.frame_width = order[-1]  # where the probe leaves it (axe may move it back)
        findings = await self._measure(tab, page, arguments) + tab.events
        tab.begin("", 0)
        findings.sort(key=lambda finding: plan.widths.index(finding.width))
        if findings and plan.screenshots is not None:
            folder, label = plan.screenshots, plan.label
            shots = [(width, folder / screenshot_name(page, width, label)) for width in plan.widths]
            await self._shoot(page, shots)
        return findings

    async def _measure(self, tab: _Tab, page: str, arguments: dict[str, Any]) -> list[Finding]:
        """probe.js's findings at every width, with axe-core's where the probe needs it
        (loaded into the page first)."""
        try:
            results, axe_needed = measured(await self._probe(tab, page, arguments))
            axe_answer = None
            if axe_needed:
                await self._load_axe(tab, page)
                axe_answer = await self._probe(tab, page, axe_arguments(arguments))
                tab.frame_width = arguments["axeWidth"]
            return probe_findings(results, page, axe_answer)
        except ProbeAnswerError as exc:
            raise BrowserError(f"{page}: the layout check failed: {exc}") from exc

    async def _load(self, tab: _Tab, page: str, width: int) -> Finding | None:
        """Show `page` in the tab's iframe, `width` wide, and wait for it to load; a
        finding when it does not."""
        from playwright.async_api import Error as PlaywrightError

        try:
            if tab.frame_width != width:
                await tab.page.evaluate(_SIZE_FRAME, list(viewport(width)))
                tab.frame_width = width
            response = await tab.view.goto(
                self._url(page), wait_until="load", timeout=self.timeout * 1000
            )
        except PlaywrightError as exc:
            return _load_failure(page, width, one_line(exc))
        if response is None or not response.ok:
            status = "no answer" if response is None else f"HTTP {response.status}"
            return _load_failure(page, width, status)
        return None

    async def _probe(
        self, tab: _Tab, page: str, argument: Any = None, script: str | None = None
    ) -> Any:
        """Run `script` (probe.js by default) in the page; BrowserError naming the page
        if it throws or hangs (the tab starts over with a new harness)."""
        from playwright.async_api import Error as PlaywrightError

        try:
            with anyio.fail_after(self.timeout):
                return await tab.view.evaluate(script or probe_source(), argument)
        except (PlaywrightError, TimeoutError) as exc:
            reason = one_line(exc) if isinstance(exc, PlaywrightError) else "no answer in time"
            await tab.open(self._require_context())
            raise BrowserError(f"{page}: the layout check failed: {reason}") from exc

    async def _load_axe(self, tab: _Tab, page: str) -> None:
        """axe-core into the page: as a script of the site's server, whose compiled code
        the browser keeps (half the cost of evaluating its source, 35 ms against 70),
        or, where the page's Content-Security-Policy refuses that, evaluated."""
        if not await self._probe(tab, page, tab.axe_url, script=_ADD_AXE):
            await self._probe(tab, page, script=_evaluated_axe())

    async def _shoot(self, page: str, shots: Sequence[tuple[int, Path]]) -> None:
        """Full-page PNGs of `page`, each (width, path), from a top-level tab of its own
        (a screenshot of the iframe would stop at the harness's edge)."""
        from playwright.async_api import Error as PlaywrightError

        tab = await self._require_context().new_page()
        try:
            for width, path in shots:
                frame_width, frame_height = viewport(width)
                await tab.set_viewport_size({"width": frame_width, "height": frame_height})
                if tab.url == "about:blank":
                    await tab.goto(self._url(page), wait_until="load", timeout=self.timeout * 1000)
                path.parent.mkdir(parents=True, exist_ok=True)
                await tab.screenshot(path=path, full_page=True, timeout=self.timeout * 1000)
        except PlaywrightError as exc:
            raise BrowserError(f"{page}: no screenshot: {one_line(exc)}") from exc
        finally:
            with suppress(Exception), anyio.move_on_after(CLOSE_TIMEOUT):
                await tab.close(run_before_unload=False)


# Sizes the harness's iframe: the page loads at the width it is first measured at.
_SIZE_FRAME = """([width, height]) => {
  const frame = document.querySelector("iframe");
  frame.style.width = `${width}px`;
  frame.style.height = `${height}px`;
}"""


# Adds axe-core's script to the page and waits for it: true once loaded, false when it
# could not be (the page's Content-Security-Policy may forbid it).
_ADD_AXE = """(url) => new Promise((resolve) => {
  if (typeof window.axe === "object" && typeof window.axe.run === "function") {
    resolve(true);
    return;
  }
  const script = document.createElement("script");
  script.src = url;
  script.onload = () => { script.remove(); resolve(true); };
  script.onerror = () => { script.remove(); resolve(false); };
  (document.head || document.documentElement).appendChild(script);
})"""


@cache
def _evaluated_axe() -> str:
    """axe-core's script as an expression to evaluate, which no Content-Security-Policy
    refuses. It ends in a plain value, so nothing of axe is sent back."""
    return f"{axe_source()}\n;0"


def _load_failure(page: str, width: int, reason: str) -> Finding:
    """The finding for a page that did not load: nothing else could be checked on it."""
    return Finding(
        page=page,
        width=width,
        kind=ASSET_FAILED,
        block=None,
        element="",
        detail=f"{page} did not load, so it was not checked: {reason}",
    )


@contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port that is bound and never listened on, held for the session: a
    connection to it is refused at once, and no other program can take it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind((LOOPBACK, 0))
        yield int(held.getsockname()[1])


def _proxy_flags(site_port: int, nowhere: int) -> list[str]:
    """Every request goes through a proxy that refuses it, except to the site's server.

    `<-loopback>` drops Chromium's implicit exception for loopback addresses, so other
    local servers are refused as well; the one exception is the site's own address.
    """
    return [
        f"--proxy-server=http://{LOOPBACK}:{nowhere}",
        f"--proxy-bypass-list=<-loopback>;{LOOPBACK}:{site_port}",
    ]
