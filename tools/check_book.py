#!/usr/bin/env python
"""Check the built book in a real browser: ``python tools/check_book.py``.

Serves the built HTML from a local server (127.0.0.1, random port), opens
index.html and every page listed in ``_toc.yml`` in headless Chromium
(Playwright, Debian's /usr/bin/chromium) with every request to anything but
that server blocked, and reports, per page:

* a page listed in the TOC that is missing from the build;
* a console error, an uncaught page error, a local resource answering with an
  HTTP error, or a request to the outside (blocked, and reported);
* an <img> that does not decode (``naturalWidth == 0``);
* untypeset math: raw ``$$``, ``\\(``, ``\\[`` or ``\\begin{`` in the visible
  text after MathJax has finished, a math element MathJax did not process, or
  a MathJax error;
* stray markup in the prose (outside code, the outputs of code cells and
  math), visible or inside a collapsed dropdown: a ``$`` (a formula MyST did
  not parse, e.g. ``$$...$$`` inside a list item), a TeX command such as
  ``\\frac`` that MathJax did not typeset, or a ``{glue:...}`` role left as text;
* a link to a local page or anchor that does not exist;
* a Jupyter widget that did not render, and a visible slider that does
  nothing: each slider is moved with the keyboard (the mouse if that fails)
  and the visible images/text around it must change.

A full-page PNG screenshot of every page is saved in ``--screenshots``.
Exit status: 0 when every page passes, 1 otherwise (one line per problem),
2 when the check itself cannot run (no build, no Chromium).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from book_js import JS_INSPECT, JS_MARK_SLIDERS, JS_SETTLE, JS_SLIDER_STATE, JS_WAIT_READY
from book_site import LinkChecker, LocalServer, toc_docnames  # noqa: F401 (toc_docnames re-exported)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
#: Stray markup a reader must never see in the prose (problem kind -> what it is).
STRAY_MARKUP = {
    "stray-dollar": "a dollar sign",
    "raw-tex": "a TeX command MathJax did not typeset",
    "unresolved-glue": "a {glue} role left as text",
}
#: Milliseconds to wait for a page to load, typeset and render its widgets.
PAGE_TIMEOUT_MS = 30_000
#: Milliseconds to wait for a slider's content to change after moving it.
SLIDER_TIMEOUT_MS = 4_000


@dataclass(frozen=True)
class Problem:
    page: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.page}: [{self.kind}] {self.message}"


@dataclass
class PageResult:
    page: str
    problems: list[Problem] = field(default_factory=list)
    screenshot: Path | None = None
    sliders: int = 0
    widgets: int = 0
    math: int = 0

    def add(self, kind: str, message: str) -> None:
        self.problems.append(Problem(self.page, kind, message))


class CheckError(Exception):
    """The check could not run at all."""


# --------------------------------------------------------------------------
# The check


def _page_name(html_dir: Path, path: Path) -> str:
    return path.relative_to(html_dir).as_posix()


def _screenshot_name(page: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", page.removesuffix(".html")) + ".png"


def _check_slider(page, index: int, result: PageResult) -> None:  # noqa: ANN001
    handle = page.locator(f'[data-book-check-slider="{index}"]')
    before = handle.evaluate(JS_SLIDER_STATE)
    label = f"slider #{index + 1} (at {before['readout']!r})"
    if before["max"] <= before["min"]:
        result.add("dead-slider", f"{label} has a single position")
        return
    key, back = ("ArrowRight", "ArrowLeft") if before["value"] < before["max"] else ("ArrowLeft", "ArrowRight")
    handle.focus()
    page.keyboard.press(key)
    after = _wait_for_change(page, handle, before)
    if after["value"] == before["value"]:
        # Keyboard did not move it: drag with the mouse to the other end.
        box = handle.bounding_box()
        track = handle.locator("xpath=ancestor::*[contains(@class,'noUi-target')][1]")
        tbox = track.bounding_box() if track.count() else None
        if box and tbox:
            target_x = tbox["x"] + (tbox["width"] - 1 if key == "ArrowRight" else 1)
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(target_x, box["y"] + box["height"] / 2, steps=5)
            page.mouse.up()
            after = _wait_for_change(page, handle, before)
    if after["value"] == before["value"]:
        result.add("dead-slider", f"{label} cannot be moved (keyboard or mouse)")
        return
    if after["signature"] == before["signature"]:
        result.add(
            "dead-slider",
            f"{label} moved to {after['readout']!r} but nothing else on the page changed",
        )
    # Put it back, so the screenshot shows the page as a reader first sees it.
    handle.focus()
    page.keyboard.press(back)


def _wait_for_change(page, handle, before: dict) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + SLIDER_TIMEOUT_MS / 1000
    state = handle.evaluate(JS_SLIDER_STATE)
    while time.monotonic() < deadline:
        if state["value"] != before["value"] and state["signature"] != before["signature"]:
            break
        page.wait_for_timeout(100)
        state = handle.evaluate(JS_SLIDER_STATE)
    return state


def check_page(
    context,
    server: LocalServer,
    links: LinkChecker,
    html_dir: Path,
    path: Path,  # noqa: ANN001
    screenshots: Path | None,
) -> PageResult:
    name = _page_name(html_dir, path)
    result = PageResult(name)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and result.add("console-error", m.text))
    page.on("pageerror", lambda e: result.add("page-error", str(e)))
    page.on("response", lambda r: r.status >= 400 and result.add("http-error", f"{r.status} {r.url}"))
    try:
        page.goto(server.base + name, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        source = path.read_text(encoding="utf-8", errors="replace")
        if re.search(r'http-equiv="refresh"', source, re.IGNORECASE):
            # index.html: a redirect to the root page.
            match = re.search(r'url=([^"\']+)', source, re.IGNORECASE)
            target = urllib.parse.urljoin(server.base + name, match.group(1).strip()) if match else ""
            error = links.check(target, path, set()) if target else "no target"
            if error:
                result.add("broken-link", f"redirect to {target}: {error}")
            else:
                page.wait_for_url(lambda u: u.split("#")[0] == target.split("#")[0], timeout=PAGE_TIMEOUT_MS)
                page.wait_for_load_state("load")
        ready = page.evaluate(JS_WAIT_READY, PAGE_TIMEOUT_MS)
        if ready["unrendered"]:
            result.add(
                "widget-not-rendered",
                f"{len(ready['unrendered'])} of {ready['views']} widget(s) did not render "
                f"(models {', '.join(ready['unrendered'][:3])}); was the notebook executed with "
                "its widget state saved (python tools/execute_notebooks.py)?",
            )
        info = page.evaluate(JS_INSPECT)
        result.math, result.widgets = info["mathCount"], info["widgetCount"]
        for src in info["brokenImages"]:
            result.add("broken-image", f"image does not decode: {src}")
        for text in info["rawMath"]:
            result.add("raw-math", f"raw TeX visible in the page: {text!r}")
        for stray in info["strayMarkup"]:
            result.add(stray["kind"], f'{STRAY_MARKUP[stray["kind"]]} in the prose: "{stray["text"]}"')
        for text in info["untypeset"]:
            result.add("untypeset-math", f"math element not typeset by MathJax: {text!r}")
        for text in info["mathErrors"]:
            result.add("math-error", f"MathJax error: {text!r}")
        current = links.local_file(page.url.split("#")[0]) or path
        seen: set[str] = set()
        for link in info["links"]:
            if link["href"] in seen:
                continue
            seen.add(link["href"])
            error = links.check(link["href"], current, set(info["ids"]))
            if error:
                result.add("broken-link", f"href={link['raw']!r}: {error}")
        result.sliders = page.evaluate(JS_MARK_SLIDERS)
        for i in range(result.sliders):
            _check_slider(page, i, result)
        if screenshots is not None:
            # Undo the slider checks' focus and scrolling: a full-page
            # screenshot of a scrolled page repeats the sticky header.
            page.evaluate("() => { if (document.activeElement) document.activeElement.blur(); window.scrollTo(0, 0); }")
            page.evaluate(JS_SETTLE, 3000)
            result.screenshot = screenshots / _screenshot_name(name)
            page.screenshot(path=str(result.screenshot), full_page=True)
    except Exception as exc:  # a timeout or a crash: report, go on with the next page
        result.add("load-failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        page.close()
    return result


def check_site(
    html_dir: Path,
    toc: Path,
    screenshots: Path | None = None,
    chromium: str = CHROMIUM,
    log=print,  # noqa: ANN001
) -> list[PageResult]:
    """Check every page of the TOC (plus index.html); return one result per page."""
    html_dir = html_dir.resolve()
    if not (html_dir / "index.html").is_file():
        raise CheckError(f"{html_dir / 'index.html'} not found: build the book first (python tools/build_book.py)")
    if not Path(chromium).exists():
        raise CheckError(f"{chromium} not found: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    results: list[PageResult] = []
    pages = [html_dir / "index.html"]
    for docname in toc_docnames(toc):
        path = html_dir / f"{docname}.html"
        if path.is_file():
            pages.append(path)
        else:
            missing = PageResult(f"{docname}.html")
            missing.add("missing-page", f"listed in {toc.name} but not in the build ({path})")
            results.append(missing)
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
        for stale in screenshots.glob("*.png"):  # from pages that no longer exist
            stale.unlink()

    with LocalServer(html_dir) as server, tempfile.TemporaryDirectory(prefix="check-book-") as profile:
        links = LinkChecker(html_dir, server.base)
        external: dict[str, list[str]] = {}
        current = {"page": ""}

        def route(request_route) -> None:  # noqa: ANN001
            url = request_route.request.url
            if url.startswith(server.base) or url.startswith(("data:", "blob:")):
                request_route.continue_()
            else:
                external.setdefault(current["page"], []).append(url)
                request_route.abort("blockedbyclient")

        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport=VIEWPORT,
                service_workers="block",
            )
            try:
                context.route("**/*", route)
                for path in pages:
                    current["page"] = _page_name(html_dir, path)
                    started = time.monotonic()
                    result = check_page(context, server, links, html_dir, path, screenshots)
                    for url in external.pop(current["page"], []):
                        result.add("external-request", f"blocked request to the outside: {url}")
                    # The browser reports blocked requests as console errors too.
                    result.problems = [
                        p
                        for p in result.problems
                        if not (
                            p.kind == "console-error"
                            and "ERR_BLOCKED_BY_CLIENT" in p.message
                            and any(q.kind == "external-request" for q in result.problems)
                        )
                    ]
                    results.append(result)
                    status = "ok" if not result.problems else f"{len(result.problems)} problem(s)"
                    log(
                        f"  {result.page}: {status} ({result.math} math, {result.widgets} widgets, "
                        f"{result.sliders} sliders, {time.monotonic() - started:.1f}s)"
                    )
            finally:
                context.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html-dir", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", CHROMIUM))
    args = parser.parse_args(argv)
    print(f"checking {args.html_dir} (pages from {args.toc}) in {args.chromium}")
    try:
        results = check_site(args.html_dir, args.toc, args.screenshots, args.chromium)
    except CheckError as exc:
        print(f"check_book: error: {exc}", file=sys.stderr)
        return 2
    problems = [p for r in results for p in r.problems]
    if args.screenshots:
        print(f"screenshots in {args.screenshots}")
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"all {len(results)} page(s) passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
