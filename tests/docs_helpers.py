"""Run the code in Markdown pages: the machinery behind `tests/test_docs.py`.

A page is read as a sequence of items, executed in order in one namespace:

* a fenced ```` ```python ```` block runs as a script; if the next fenced block follows it with
  only blank lines between and is a ```` ```text ```` block, that block is the expected printed
  output. A block without one only has to run without error (its asserts are the check). A
  block whose lines start with ``>>>`` runs as a doctest instead.
* a Markdown table right after an ``<!-- equivalent-calls -->`` comment is a table of
  equivalent calls: in each row the first two cells hold a call in backticks (for example
  `` `optax.losses.kl_divergence(lq, p)` `` and `` `jaxloss.kl_divergence(lq, p)` ``); both are
  evaluated in the page's namespace and must agree (options: ``rtol=``, ``atol=``).

Directives are HTML comments, invisible on the site:

* ``<!-- docs-test: skip -->`` right before a fence: do not run that block.
* ``<!-- docs-test: devices N -->`` right before a fence: run that block alone in a fresh
  Python process with ``N`` simulated CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` must be set before JAX starts), for
  sharded examples. The block shares nothing with the page's namespace: it imports and builds
  what it uses. Its printed output is checked like any other block's.
* ``<!-- docs-test: requires torch -->`` anywhere: skip the page when ``torch`` is missing.

Printed output is compared token by token after collapsing whitespace; a number matches when it
is within one unit of the last digit written in the expected output (so ``0.3466`` accepts
``0.34657``, the way pytest's ``NUMBER`` option does); integers and the sign of a zero must
match exactly. ``...`` in the expected output matches anything.

`python -m tests.docs_helpers --update PAGE.md` rewrites the expected-output blocks of a page
from a fresh run (review the diff: it blesses whatever the code prints).
"""

from __future__ import annotations

import contextlib
import doctest
import io
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?P<body>.*?)\s*-->")
_TABLE_MARK = re.compile(r"<!--\s*equivalent-calls(?P<opts>[^>]*?)-->")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


@dataclass
class CodeBlock:
    line: int  # 1-based line of the opening fence
    code: str
    expected: str | None = None
    expected_span: tuple[int, int] | None = None  # 0-based [start, end) lines of its body
    skip: bool = False
    devices: int | None = None  # run alone in a subprocess with this many CPU devices


@dataclass
class CallTable:
    line: int
    rows: list[tuple[int, str, str]] = field(default_factory=list)  # (line, left, right)
    rtol: float = 1e-5
    atol: float = 1e-6


@dataclass
class Page:
    path: Path
    items: list[CodeBlock | CallTable]
    requires: list[str]


def _fences(lines: list[str]) -> list[tuple[int, int, str, str]]:
    """(open line, close line, info string, body) of every fenced block, 0-based lines."""
    out = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            j += 1
        # Strip the fence's own indentation (a block inside a list item or an admonition).
        body = "\n".join(
            line[indent:] if not line[:indent].strip() else line for line in lines[i + 1 : j]
        )
        out.append((i, j, m["info"].lower(), body))
        i = j + 1
    return out


def _table_cells(line: str) -> list[str]:
    # Split on pipes that are not escaped (a `|` inside a cell is written `\|`).
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.strip().replace("\\|", "|") for p in parts]


def _code_in(cell: str) -> str | None:
    m = re.fullmatch(r"`([^`]+)`", cell.strip())
    return m[1] if m else None


def parse(path: Path) -> Page:
    lines = path.read_text(encoding="utf-8").splitlines()
    fences = _fences(lines)
    inside = set()
    for start, end, _, _ in fences:
        inside.update(range(start, end + 1))
    requires = [
        d["body"].split(None, 1)[1]
        for i, line in enumerate(lines)
        if i not in inside
        for d in _DIRECTIVE.finditer(line)
        if d["body"].startswith("requires ")
    ]
    items: list[tuple[int, CodeBlock | CallTable]] = []
    k = 0
    while k < len(fences):
        start, end, info, body = fences[k]
        if info in ("python", "py", "pycon"):
            prev = start - 1
            while prev >= 0 and not lines[prev].strip():
                prev -= 1
            bodies = [d["body"] for d in _DIRECTIVE.finditer(lines[prev])] if prev >= 0 else []
            block = CodeBlock(line=start + 1, code=body, skip="skip" in bodies)
            for b in bodies:
                if b.startswith("devices "):
                    block.devices = int(b.split()[1])
            if k + 1 < len(fences):
                n_start, n_end, n_info, n_body = fences[k + 1]
                between = lines[end + 1 : n_start]
                if n_info == "text" and all(not s.strip() for s in between):
                    block.expected = n_body
                    block.expected_span = (n_start + 1, n_end)
                    k += 1
            items.append((start, block))
        k += 1
    for i, line in enumerate(lines):
        m = _TABLE_MARK.search(line)
        if not m or i in inside:
            continue
        table = CallTable(line=i + 1)
        for opt in m["opts"].split():
            key, _, value = opt.partition("=")
            if key not in ("rtol", "atol"):
                raise ValueError(f"{path}:{i + 1}: unknown equivalent-calls option {opt!r}")
            setattr(table, key, float(value))
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        header = j
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            if j > header + 1:  # past the header and the |---| rule
                cells = _table_cells(lines[j])
                left, right = (_code_in(c) for c in cells[:2])
                if left is None or right is None:
                    raise ValueError(
                        f"{path}:{j + 1}: a row of an equivalent-calls table must hold a call "
                        f"in backticks in each of its first two cells, got {cells[:2]}"
                    )
                table.rows.append((j + 1, left, right))
            j += 1
        if not table.rows:
            raise ValueError(f"{path}:{i + 1}: equivalent-calls marker without a table after it")
        items.append((i, table))
    items.sort(key=lambda t: t[0])
    return Page(path=path, items=[it for _, it in items], requires=requires)


# --- output comparison -------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    return re.findall(r"\.\.\.|" + _NUMBER.pattern + r"|[^\s\d.+-]+|[.+-]", text)


def _number_matches(want: str, got: str) -> bool:
    try:
        w, g = float(want), float(got)
    except ValueError:
        return False
    if math.isnan(w) or math.isnan(g):
        return math.isnan(w) and math.isnan(g)
    if math.isinf(w) or math.isinf(g):
        return w == g
    if w == 0 and g == 0:
        # The sign of a zero is shown on the page, so it must be the one computed.
        return math.copysign(1, w) == math.copysign(1, g)
    mantissa, _, exponent = want.lower().partition("e")
    if "." not in mantissa and not exponent:
        return w == g  # an integer (a shape, a count, an index) must match exactly
    places = len(mantissa.partition(".")[2])
    unit = 10.0 ** (int(exponent or 0) - places)
    # One unit of the last written digit (two runs may round a tie differently), but never
    # looser than 1e-4 relative: NumPy drops trailing zeros, so `1.` may stand for `1.0000`.
    tol = min(unit, 1e-4 * max(1.0, abs(w)))
    return abs(w - g) <= tol * 1.0001


def output_matches(expected: str, got: str) -> bool:
    """Whitespace-insensitive comparison, numbers to the precision written in `expected`."""
    want, have = _tokens(expected), _tokens(got)

    def match(i: int, j: int) -> bool:
        while i < len(want):
            if want[i] == "...":
                return any(match(i + 1, jj) for jj in range(j, len(have) + 1))
            if j >= len(have):
                return False
            w, h = want[i], have[j]
            if _NUMBER.fullmatch(w) and _NUMBER.fullmatch(h):
                if not _number_matches(w, h):
                    return False
            elif w != h:
                return False
            i, j = i + 1, j + 1
        return j == len(have)

    return match(0, 0)


# --- execution ---------------------------------------------------------------------------------


class DocsError(AssertionError):
    pass


def to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float64)


def run_block(block: CodeBlock, namespace: dict, where: str) -> str:
    """Execute one block in `namespace`; return what it printed."""
    if block.code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(block.code, namespace, where, where, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        report = io.StringIO()
        runner.run(test, out=report.write, clear_globs=False)
        if runner.failures:
            raise DocsError(f"{where}: doctest failed\n{report.getvalue()}")
        return ""
    stdout = io.StringIO()
    code = compile(block.code, where, "exec")
    with contextlib.redirect_stdout(stdout):
        exec(code, namespace)
    return stdout.getvalue()


def run_block_in_subprocess(block: CodeBlock, where: str) -> str:
    """Execute one block alone in a fresh process with `block.devices` CPU devices."""
    env = dict(os.environ)
    flag = f"--xla_force_host_platform_device_count={block.devices}"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    root = str(Path(__file__).resolve().parent.parent)  # this checkout's jaxloss
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", block.code],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        raise DocsError(
            f"{where}: the block failed on {block.devices} devices\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def run_table(table: CallTable, namespace: dict, path: Path) -> None:
    for line, left, right in table.rows:
        where = f"{path}:{line}"
        a = to_numpy(eval(compile(left, where, "eval"), namespace))
        b = to_numpy(eval(compile(right, where, "eval"), namespace))
        if a.shape != b.shape:
            raise DocsError(f"{where}: `{left}` has shape {a.shape}, `{right}` {b.shape}")
        if not np.allclose(a, b, rtol=table.rtol, atol=table.atol, equal_nan=True):
            raise DocsError(f"{where}: `{left}` = {a} but `{right}` = {b}")


def run_page(page: Page, *, update: bool = False) -> dict[int, str]:
    """Run every item of `page`; raise DocsError on a mismatch. Returns the printed outputs."""
    namespace: dict[str, Any] = {"__name__": f"docs:{page.path.name}"}
    printed: dict[int, str] = {}
    saved = np.get_printoptions()
    try:
        for item in page.items:
            if isinstance(item, CallTable):
                run_table(item, namespace, page.path)
                continue
            if item.skip:
                continue
            where = f"{page.path}:{item.line}"
            if item.devices:
                out = run_block_in_subprocess(item, where)
            else:
                out = run_block(item, namespace, where)
            printed[item.line] = out
            # A block without a ```text block after it shows no output, so there is nothing on
            # the page to check: it only has to run (and pass its own asserts).
            if update or item.expected is None:
                continue
            if not output_matches(item.expected, out):
                raise DocsError(
                    f"{where}: printed output differs from the ```text block after it.\n"
                    f"--- expected\n{item.expected}\n--- got\n{out}"
                )
    finally:
        np.set_printoptions(**saved)
    return printed


def update_page(path: Path) -> None:
    """Rewrite the ```text blocks of `path` (adding missing ones) from a fresh run."""
    page = parse(path)
    printed = run_page(page, update=True)
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = [it for it in page.items if isinstance(it, CodeBlock) and it.line in printed]
    for block in sorted(blocks, key=lambda b: b.line, reverse=True):
        out = printed[block.line].rstrip("\n").splitlines()
        if block.expected_span is not None:
            s, e = block.expected_span
            lines[s:e] = out
        elif out:
            close = block.line + block.code.count("\n") + 1  # 0-based line of the closing fence
            lines[close + 1 : close + 1] = ["", "```text", *out, "```"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "--update":
        sys.exit("usage: python -m tests.docs_helpers --update PAGE.md [PAGE.md ...]")
    for name in args[1:]:
        update_page(Path(name))
        print(f"updated {name}")
