"""The static side of checking the built book: its TOC, a local server, its links.

Used by tools/check_book.py, which adds the browser checks.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import re
import sys
import threading
import urllib.parse
from pathlib import Path

import yaml

# --------------------------------------------------------------------------
# Table of contents


def toc_docnames(toc_path: Path) -> list[str]:
    """Docnames (paths without extension) of every page in a jb-book TOC."""
    toc = yaml.safe_load(toc_path.read_text()) or {}
    names: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    names.append(node[key])
            for key in ("chapters", "sections", "parts", "subtrees", "entries"):
                visit(node.get(key))
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(toc)
    seen: dict[str, None] = {}
    for name in names:
        name = re.sub(r"\.(md|ipynb|rst)$", "", name.strip().lstrip("/"))
        seen.setdefault(name, None)
    return list(seen)


# --------------------------------------------------------------------------
# Local server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the browser hung up
            super().handle_error(request, client_address)


class LocalServer:
    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------
# Links


class _IdCollector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value and (key == "id" or (key == "name" and tag == "a")):
                self.ids.add(value)


class LinkChecker:
    def __init__(self, html_dir: Path, base: str) -> None:
        self.html_dir = html_dir.resolve()
        self.base = urllib.parse.urlsplit(base)
        self._ids: dict[Path, set[str]] = {}

    def local_file(self, url: str) -> Path | None | bool:
        """The file a same-site URL points to; None if not same-site; False if missing."""
        parts = urllib.parse.urlsplit(url)
        if (parts.scheme, parts.netloc) != (self.base.scheme, self.base.netloc):
            return None
        rel = urllib.parse.unquote(parts.path).lstrip("/")
        target = (self.html_dir / rel).resolve()
        if self.html_dir not in target.parents and target != self.html_dir:
            return False
        if target.is_dir():
            target = target / "index.html"
        return target if target.is_file() else False

    def ids(self, path: Path) -> set[str]:
        if path not in self._ids:
            collector = _IdCollector()
            collector.feed(path.read_text(encoding="utf-8", errors="replace"))
            self._ids[path] = collector.ids
        return self._ids[path]

    def check(self, url: str, page_file: Path, dom_ids: set[str]) -> str | None:
        """An error message if ``url`` is a broken internal link, else None."""
        target = self.local_file(url)
        if target is None:
            return None
        if target is False:
            return "target page does not exist"
        fragment = urllib.parse.unquote(urllib.parse.urlsplit(url).fragment)
        if not fragment:
            return None
        ids = dom_ids if target == page_file else self.ids(target)
        if fragment not in ids:
            return f"anchor #{fragment} does not exist in {target.relative_to(self.html_dir)}"
        return None
