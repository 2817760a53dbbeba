"""docs/benchmarks.md quotes no number by hand: each figure in its prose is written as
`<!-- fig EXPR -->value<!-- /fig -->` and must equal EXPR evaluated against the generated files
under docs/bench/ (`bench.report.figure`); any other number in the prose must be a shape of
bench/shapes.py or one of the few definitions listed here. Reads JSON only: fast.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
if str(ROOT) not in sys.path:  # `bench/` is a top-level folder, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import report, shapes  # noqa: E402

#: Numbers that define a unit or an example rather than report a measurement.
DEFINITIONS = ("1·B", "2·B", "2·√K", '"0.5×"', "100%")
NUMBER = re.compile(r"(?<![\w.·])\d+(?:[.,]\d+)*(?![\w.]*\w)")


def prose(text: str) -> str:
    """The page's prose: no front matter, code, inline code, figures or comments."""
    text = text.split("---", 2)[2] if text.startswith("---") else text
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = report.FIGURE.sub(" ", text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    for d in DEFINITIONS:
        text = text.replace(d, " ")
    return text


def test_every_quoted_figure_equals_the_generated_files():
    figures = report.docs_figures(PAGE)
    assert len(figures) > 20  # the page's figures are written the checked way
    # Markdown takes a line that starts with a comment for an HTML block: the paragraph breaks.
    starts = [ln for ln in PAGE.read_text().splitlines() if ln.lstrip().startswith("<!-- fig")]
    assert not starts, f"a figure starts a line: {starts[0][:80]}"
    wrong = [(expr, shown, want) for expr, shown, want in figures if shown != want]
    assert not wrong, "stale figures (python -m bench.report --docs rewrites them):\n" + "\n".join(
        f"{shown!r} should be {want!r}: {expr}" for expr, shown, want in wrong
    )


def test_no_number_in_the_prose_is_typed_by_hand():
    dims = {str(v) for s in shapes.SHAPES.values() for v in (s.batch, s.classes, s.hidden)}
    hand = [n for n in NUMBER.findall(prose(PAGE.read_text())) if n not in dims]
    assert not hand, f"numbers typed by hand in {PAGE.name}: {hand}"


@pytest.mark.parametrize(
    ("text", "typed"),
    [
        ("took 1.23× Optax's time", ["1.23"]),
        ("at 4096×32000, <!-- fig 1 + 1 -->2<!-- /fig --> cores, `--rounds 7`", ["4096", "32000"]),
        ("a float32 H100 run at 1·B", []),
    ],
)
def test_the_number_check_sees_hand_typed_numbers(text: str, typed: list[str]):
    assert NUMBER.findall(prose(text)) == typed
