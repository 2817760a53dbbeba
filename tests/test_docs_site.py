"""The built documentation site works offline: checked in a real browser.

`mkdocs build --strict` writes the site into a temporary folder, a local HTTP server on
127.0.0.1 serves it, and headless Chromium (Debian's `chromium`, driven by Playwright's Python
package, which never downloads a browser of its own here) opens every page. A page fails when

* it asks for anything from another host (a script, a stylesheet, a font, an API call): the
  site must render on a machine without a network;
* a formula is left as raw TeX: every `arithmatex` element must hold an `mjx-container`, and
  no `\\(` or `\\[` may be left in the text MathJax was given;
* its script throws, or a request for one of its own files fails (a missing font, say);
* at 1280 px a table is wider than its column, so that part of it is scrolled out of sight, or
  a code block is wider than its box (its long lines scroll sideways), or a function's name in
  the API summary is broken across lines.

The browser test skips only when Chromium is absent (`.ci/run` installs it). Set
`JAXLOSS_DOCS_SCREENSHOTS=DIR` to also save a screenshot of each page at 1280 px and of a few
pages at 400 px, to look at by eye.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

# Its module-scoped work runs once: `make test-all` sends each slow file to one worker
# (`--dist loadfile`).
# The slow tier (`make test-all`): the built site in Chromium.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHROMIUM = os.environ.get("JAXLOSS_CHROMIUM", "/usr/bin/chromium")
# Flags for a closed network, as root: without the background-networking ones Chromium's own
# connections (component updates, sync) are refused and slow every page load down.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Their code blocks are checked once other branches have shortened them (tests/test_docs.py's
# CODE_WIDTH_PENDING says when).
CODE_WIDTH_PENDING: tuple[str, ...] = ()
NARROW_PAGES = ("index.html", "theory/index.html", "benchmarks/index.html", "api/index.html")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vendored_mathjax_matches_its_manifest() -> None:
    vendor = _load("vendor_mathjax", DOCS / "_ext" / "vendor_mathjax.py")
    assert vendor.check() == [], "run `python docs/_ext/vendor_mathjax.py` to refresh"


def test_site_version_is_the_package_version() -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert version is not None
    assert f"jaxloss_version: {version[1]}" in config
    assert f"jaxloss {version[1]}" in config  # the footer's copyright line
    assert f"## {version[1]}" in (DOCS / "changelog.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    return out


def _pages(site: Path) -> list[str]:
    return sorted(
        str(p.relative_to(site))
        for p in site.rglob("index.html")
        if "assets" not in p.parts and "javascripts" not in p.parts
    )  # 404.html uses absolute paths under site_url: it only works at the deployed address


_EXTERNAL_SRC = re.compile(
    r"""<(?:script|img|iframe|source|video|audio|embed)\b[^>]*?\bsrc=["']((?:https?:)?//[^"']+)""",
    re.IGNORECASE,
)
_LINK = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""\bhref=["']((?:https?:)?//[^"']+)""", re.IGNORECASE)
# A <link> that makes the browser fetch something; rel="canonical" (site_url) only names a page.
_FETCHING_REL = re.compile(
    r"""\brel=["'][^"']*\b(?:stylesheet|preload|modulepreload|prefetch|preconnect|icon|manifest)""",
    re.IGNORECASE,
)
_CSS_URL = re.compile(r"""url\(\s*["']?((?:https?:)?//[^"')]+)""", re.IGNORECASE)


def test_pages_reference_nothing_from_another_host(site: Path) -> None:
    """Static check of the HTML and CSS: no external script, stylesheet, font or image.

    Links (`<a href>`) to other sites are fine: following one is the reader's choice."""
    bad = []
    for page in _pages(site):
        html = (site / page).read_text(encoding="utf-8")
        bad += [f"{page}: {url}" for url in _EXTERNAL_SRC.findall(html)]
        for link in _LINK.findall(html):
            href = _HREF.search(link)
            if href and _FETCHING_REL.search(link):
                bad.append(f"{page}: {href[1]}")
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        bad += [f"{css.relative_to(site)}: {url}" for url in _CSS_URL.findall(text)]
    assert not bad, "external resources:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("term", "page"),
    [("linen", "training/"), ("pos_weight", "recipes/"), ("sum_and_count", "recipes/")],
)
def test_site_search_finds(site: Path, term: str, page: str) -> None:
    """The search box's index (what Material's search reads) holds the term on that page."""
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    found = {
        d["location"].split("#")[0]
        for d in index["docs"]
        if term.lower() in (d["title"] + " " + d["text"]).lower()
    }
    assert page in found, f"searching {term!r} finds {sorted(found)}, not {page}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (as .ci/run does) "
            "to run the browser checks of the documentation site"
        )
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


# Run in the page once MathJax has finished: what a reader would see.
_INSPECT = """
() => {
  const math = [...document.querySelectorAll(".arithmatex")];
  const raw = math.filter(el => !el.querySelector("mjx-container"))
                  .map(el => el.textContent.trim().slice(0, 80));
  const text = document.querySelector("article") ? document.querySelector("article").innerText : "";
  // Material makes a wide table scroll sideways (the table or its wrapper overflows): its
  // last columns are then out of sight until the reader scrolls.
  const overflows = el => el.scrollWidth > el.clientWidth + 1;
  const clipped = [...document.querySelectorAll("article table")]
    .filter(t => overflows(t) || (t.closest(".md-typeset__scrollwrap") &&
                                  overflows(t.closest(".md-typeset__scrollwrap"))))
    .map(t => (t.querySelector("th, td") || t).innerText.trim().slice(0, 40));
  // A code block wider than its box scrolls sideways: the ends of its long lines are hidden.
  const code = [...document.querySelectorAll("article pre > code")]
    .filter(overflows)
    .map(c => c.innerText.split("\\n").reduce((a, l) => l.length > a.length ? l : a, ""))
    .map(l => l.trim().slice(0, 60));
  // What a table's function-name column shows: a name may not be broken across lines.
  const names = [...document.querySelectorAll("article .api-summary td:first-child code")];
  const broken = names.filter(c => c.getClientRects().length > 1).map(c => c.innerText);
  return {
    code: code,
    broken: broken,
    arithmatex: math.length,
    rendered: document.querySelectorAll("mjx-container").length,
    raw: raw,
    delimiters: (text.match(/\\\\[\\(\\[]/g) || []).length,
    clipped: clipped,
  };
}
"""


def _open(context, url: str):
    page = context.new_page()
    requests: list[str] = []
    failures: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failures.append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and failures.append(f"{r.url} ({r.status})"))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load")
    # MathJax typesets asynchronously after load; its startup promise settles when it is done.
    page.wait_for_function(
        "() => !document.querySelector('.arithmatex') || "
        "(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)",
        timeout=30_000,
    )
    page.evaluate("() => document.querySelector('.arithmatex') ? MathJax.startup.promise : null")
    return page, requests, failures, errors


def test_every_page_renders_offline(site: Path, server: str, browser) -> None:
    shots = os.environ.get("JAXLOSS_DOCS_SCREENSHOTS")
    problems: list[str] = []
    total_math = 0
    host = urlsplit(server).netloc
    for name in _pages(site):
        page, requests, failures, errors = _open(browser, server + name)
        info = page.evaluate(_INSPECT)
        total_math += info["rendered"]
        foreign = [
            u
            for u in requests
            if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).netloc != host
        ]
        problems += [f"{name}: request to another host: {u}" for u in foreign]
        problems += [f"{name}: failed request: {f}" for f in failures if "favicon" not in f]
        problems += [f"{name}: script error: {e}" for e in errors]
        problems += [f"{name}: unrendered math: {r!r}" for r in info["raw"]]
        if info["delimiters"]:
            problems.append(f"{name}: {info['delimiters']} raw \\( or \\[ left in the text")
        problems += [f"{name}: table clipped at 1280 px: {c!r}" for c in info["clipped"]]
        if not any(name.startswith(p) for p in CODE_WIDTH_PENDING):
            problems += [f"{name}: code scrolls at 1280 px: {c!r}" for c in info["code"]]
        problems += [f"{name}: function name broken across lines: {c!r}" for c in info["broken"]]
        if shots:
            out = Path(shots)
            out.mkdir(parents=True, exist_ok=True)
            stem = name.removesuffix("index.html").strip("/").replace("/", "_") or "home"
            stem = stem.removesuffix(".html")
            page.screenshot(path=str(out / f"{stem}-1280.png"), full_page=True)
            if name in NARROW_PAGES:
                page.set_viewport_size({"width": 400, "height": 800})
                page.screenshot(path=str(out / f"{stem}-400.png"), full_page=True)
        page.close()
    assert not problems, "\n".join(problems)
    assert total_math > 100, f"only {total_math} formulas rendered on the whole site"
