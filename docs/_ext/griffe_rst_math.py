"""Griffe extension: render the RST markup of jaxloss's docstrings in MkDocs.

The docstrings follow Optax: Google sections, with ``.. math::`` blocks and ``:math:`x``` roles
that Sphinx understands. mkdocstrings reads Markdown, so this rewrites both into the
``$$ ... $$`` and ``$...$`` delimiters that ``pymdownx.arithmatex`` hands to MathJax. A literal
that names a public function (````cross_entropy```` or ````jaxloss.cross_entropy````) becomes a
cross-reference to its entry on the API page (mkdocs-autorefs resolves ``[text][identifier]``).
The source docstrings stay as they are (pytest's doctests and ``help()`` read them unchanged).

A docstring may give its formula twice: a paragraph starting ``In plain text:`` with Unicode
math for ``help()`` readers, then the ``.. math::`` block. The site shows the rendered block
only, so the plain-text paragraph is dropped here.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":math:`([^`]+)`")
# Sphinx cross-reference roles (:class:`jax.sharding.Mesh`) become plain code spans.
_XREF = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|obj|data|exc):`~?([^`]+)`")
PLAIN = "In plain text:"
_LITERAL = re.compile(r"``(?:jaxloss\.)?(\w+)``")


def _public_names() -> frozenset[str]:
    try:
        import jaxloss
    except ImportError:  # building the docs of a checkout whose package does not import
        return frozenset()
    return frozenset(jaxloss.__all__)


def _link(line: str, names: frozenset[str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        return f"[`{name}`][jaxloss.{name}]" if name in names else m.group(0)

    return _LITERAL.sub(sub, line)


def rst_math_to_markdown(text: str, names: frozenset[str] = frozenset()) -> str:
    """Rewrite ``.. math::`` blocks and ``:math:`` roles as ``$$``/``$`` math, cross-reference
    roles such as ``:class:`` as code spans, and literals in `names` as links to the API page."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(PLAIN):
            while i < len(lines) and lines[i].strip():
                i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            continue
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
        line = _XREF.sub(lambda m: f"`{m.group(1)}`", line)
        # Doctest lines are code: a literal there is not prose to link.
        out.append(line if stripped.startswith((">>>", "...")) else _link(line, names))
        i += 1
    return "\n".join(out)


class RstMath(griffe.Extension):
    """Rewrite RST math in every docstring once the object tree is built."""

    def __init__(self) -> None:
        super().__init__()
        self.names = _public_names()

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_math_to_markdown(obj.docstring.value, self.names)
