"""MkDocs hook: put the latest benchmark results into benchmarks.md, if there are any.

`python -m bench --out docs/bench` writes `table.md`, `results.json` and PNG plots into
docs/bench. This hook replaces the `<!-- bench-results -->` marker of benchmarks.md with that
table (its headings moved one level down, under the page's own title) and the plots, each with
a caption. The table's "jaxloss targets" section, the project's internal goals, stays in
`table.md` for the developers and is left off the page. When nothing has been written yet, it
puts a note in their place instead. Likewise `<!-- bench-aot -->` becomes the accelerator
tables of `make bench-aot` (docs/bench/aot/), each target's summary shown (the per-case
tables stay in the repository). A page that linked the plots directly would fail
`mkdocs build --strict` on a checkout without results.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MARKER = "<!-- bench-results -->"
TABLES = ("bench/table.md", "benchmarks_table.md")
# Sections of table.md written for the developers, not for the page.
CAPTIONS = {
    "time_vs_classes": (
        "Median time per example against the number of classes, for each implementation, "
        "mode and dtype (log scales; lower is faster)."
    ),
    "fraction_of_limit": (
        "Each implementation's speed as a fraction of the reference rate that binds it: the "
        "rate XLA reaches on a plain copy, a fused exp-and-sum or a matmul, measured in the "
        "same run. It is not the hardware's peak."
    ),
}


def _demote(markdown: str) -> str:
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        out.append("#" + line if not fenced and line.startswith("#") else line)
    return "\n".join(out)


def results_markdown(docs_dir: Path) -> str:
    parts = []
    for name in TABLES:
        table = docs_dir / name
        if table.is_file():
            parts.append(f"*From `docs/{name}`.*\n\n" + _demote(table.read_text("utf-8")))
            break
    plots = sorted((docs_dir / "bench").glob("*.png")) if (docs_dir / "bench").is_dir() else []
    for plot in plots:
        title = plot.stem.replace("_", " ")
        caption = CAPTIONS.get(plot.stem, "")
        image = f"![{title}](bench/{plot.name})"
        parts.append(f"{image}\n\n*Figure: {caption}*" if caption else image)
    if (docs_dir / "bench" / "results.json").is_file():
        parts.append("The raw figures: [results.json](bench/results.json).")
    if not parts:
        return (
            '!!! note "No results in this build"\n'
            "    This copy of the documentation was built without benchmark results: "
            "`docs/bench/` is empty. Run the command above to fill it."
        )
    # md_in_html renders the Markdown inside; docs/stylesheets/extra.css styles the class.
    return '<div class="bench-results" markdown="1">\n\n' + "\n\n".join(parts) + "\n\n</div>"


# --- accelerators, compiled without them (`make bench-aot`, bench/aot.py) ---------------------

AOT_MARKER = "<!-- bench-aot -->"
AOT_DIR = "bench/aot"
#: Shown in this order; any other target found in docs/bench/aot/ follows.
AOT_ORDER = ("tpu-v5e", "tpu-v6e", "h100")
#: bench/aot.py writes it between a table's summary and its per-function tables.
AOT_DETAILS = "<!-- aot-details -->"


def aot_markdown(docs_dir: Path) -> str:
    folder = docs_dir / AOT_DIR
    tables = sorted(folder.glob("*.md")) if folder.is_dir() else []
    if not tables:
        return (
            '!!! note "No accelerator tables in this build"\n'
            "    `docs/bench/aot/` is empty: run `make aot-env && make bench-aot` to fill it."
        )
    rank = {name: k for k, name in enumerate(AOT_ORDER)}
    tables.sort(key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
    parts = []
    for table in tables:
        text = _demote(_demote(table.read_text("utf-8")))  # under the page's "##" section
        # The per-case tables (every shape, about fifteen columns) do not fit a page; they stay
        # in the repository's copy, linked by name, with the raw figures.
        summary = text.partition(AOT_DETAILS)[0]
        parts.append(
            f"*From `docs/{AOT_DIR}/{table.name}`, where every case is listed.*\n\n"
            + summary.strip()
        )
        raw = table.with_suffix(".json")
        if raw.is_file():
            parts.append(f"The raw figures: [{raw.name}]({AOT_DIR}/{raw.name}).")
    return "\n\n".join(parts)


# `<!-- fig EXPR -->value<!-- /fig -->`: a figure and the expression over docs/bench's files it
# comes from (tests/test_benchmarks_page.py checks them). The markers go before rendering: the
# expressions' `R["a"]["b"]` would read as reference links.
FIG_MARKERS = re.compile(r"<!-- /?fig\b.*?-->")


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    docs_dir = Path(config["docs_dir"])
    markdown = FIG_MARKERS.sub("", markdown)
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, results_markdown(docs_dir))
    if AOT_MARKER in markdown:
        markdown = markdown.replace(AOT_MARKER, aot_markdown(docs_dir))
    return markdown
