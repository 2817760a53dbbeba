"""Griffe extension: render the RST markup of jaxloss's docstrings in MkDocs.

The docstrings follow Optax: Google sections, with ``.. math::`` blocks and ``:math:`x``` roles
that Sphinx understands. mkdocstrings reads Markdown, so this rewrites both into the
``$$ ... $$`` and ``$...$`` delimiters that ``pymdownx.arithmatex`` hands to MathJax. The source
docstrings stay as they are (pytest's doctests and ``help()`` read them unchanged).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":math:`([^`]+)`")
# Sphinx cross-reference roles (:class:`jax.sharding.Mesh`) become plain code spans.
_XREF = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|obj|data|exc):`~?([^`]+)`")


def rst_math_to_markdown(text: str) -> str:
    """Rewrite ``.. math::`` blocks and ``:math:`` roles as ``$$``/``$`` math, and
    cross-reference roles such as ``:class:`` as code spans."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(".. math::"):
            indent = line[: len(line) - len(stripped)]
            body: list[str] = []
            first = stripped[len(".. math::") :].strip()
            if first:
                body.append(first)
            i += 1
            # The block is every following line indented deeper than the directive, or blank.
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
            ):
                body.append(lines[i].strip())
                i += 1
            while body and not body[-1]:
                body.pop()
            out.append(f"{indent}$$")
            out.extend(f"{indent}{b}" for b in body if b)
            out.append(f"{indent}$$")
            out.append("")
            continue
        line = _ROLE.sub(lambda m: f"${m.group(1)}$", line)
        out.append(_XREF.sub(lambda m: f"`{m.group(1)}`", line))
        i += 1
    return "\n".join(out)


class RstMath(griffe.Extension):
    """Rewrite RST math in every docstring once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_math_to_markdown(obj.docstring.value)
