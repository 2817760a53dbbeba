"""MkDocs hook: put the latest benchmark results into benchmarks.md, if there are any.

`python -m bench --out docs/bench` writes `table.md`, `results.json` and PNG plots into
docs/bench. This hook replaces the `<!-- bench-results -->` marker of benchmarks.md with that
table (its headings moved one level down, under the page's own title) and the plots. When
nothing has been written yet, it puts a note in their place instead. A page that linked the
plots directly would fail `mkdocs build --strict` on a checkout without results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKER = "<!-- bench-results -->"
TABLES = ("bench/table.md", "benchmarks_table.md")


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
        parts.append(f"![{title}](bench/{plot.name})")
    if (docs_dir / "bench" / "results.json").is_file():
        parts.append("The raw figures: [results.json](bench/results.json).")
    if not parts:
        return (
            '!!! note "No results in this build"\n'
            "    This copy of the documentation was built without benchmark results: "
            "`docs/bench/` is empty. Run the command above to fill it."
        )
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, results_markdown(Path(config["docs_dir"])))
