"""The documentation is executed: pages, README, migration tables and docstring formulas.

* Every ```` ```python ```` block of README.md and docs/**/*.md runs, page by page in one
  namespace, and its printed output must match the ```` ```text ```` block after it (see
  `tests/docs_helpers.py` for the conventions). The tables of equivalent calls on the migration
  pages run both sides (jaxloss and optax / torch) on the same inputs.
* Each public function's formula, as its docstring writes it in ``.. math::``, is transcribed
  below as NumPy float64 code and checked against jaxloss (float64, under x64) on random
  inputs. The docstring's LaTeX is pinned too, so a changed formula fails here until its NumPy
  transcription is looked at again, and every name in ``jaxloss.__all__`` must have an entry.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

import jaxloss
from tests import docs_helpers

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXT = DOCS / "_ext"


def _pages() -> list[Path]:
    pages = sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []
    readme = ROOT / "README.md"
    return ([readme] if readme.is_file() else []) + pages


# --- pages ------------------------------------------------------------------------------------


# The fast tier runs the README and the theory's identities; the other pages (the numerics,
# whose cases tests/test_numerics.py and test_saturated.py run too, training loops, recipes)
# run in the slow tier.
FAST_PAGES = {"README.md", "docs/theory.md"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=() if str(p.relative_to(ROOT)) in FAST_PAGES else pytest.mark.slow)
        for p in _pages()
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_page_runs(path: Path) -> None:
    page = docs_helpers.parse(path)
    for module in page.requires:
        pytest.importorskip(module)
    docs_helpers.run_page(page)


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", config, re.MULTILINE))
    snippets = {p for p in DOCS.rglob("*.md") if p.parent != DOCS}  # included, not pages
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if p not in snippets}
    assert pages <= nav, f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"


def test_api_page_lists_every_public_name() -> None:
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^::: jaxloss\.(\w+)\s*$", api, re.MULTILINE))
    missing = set(jaxloss.__all__) - listed
    assert not missing, f"docs/api.md lacks `::: jaxloss.NAME` for {sorted(missing)}"


# --- every public function can be found --------------------------------------------------------

# The phrase of the README's (and the home page's) first sentence that names each public
# function. A new public name fails here until the pitch says what it is.
PITCH = {
    "cross_entropy": "cross-entropy with integer labels",
    "softmax_cross_entropy_with_integer_labels": "Optax's drop-ins",
    "softmax_cross_entropy": "soft targets",
    "nll_loss": "negative log-likelihood",
    "softmax_focal_loss": "focal and poly losses",
    "poly_loss_cross_entropy": "focal and poly losses",
    "smooth_labels": "label smoothing",
    "sigmoid_binary_cross_entropy": "sigmoid cross-entropy",
    "binary_cross_entropy_with_logits": "binary and multi-label",
    "sigmoid_focal_loss": "sigmoid cross-entropy and focal loss",
    "kl_divergence": "KL divergence",
    "kl_divergence_with_log_targets": "log targets",
    "softmax_kl_divergence": "distillation from logits",
    "entropy": "entropy of probabilities",
    "softmax_entropy": "or of logits",
    "accuracy": "accuracy",
    "perplexity": "perplexity",
    "logsumexp": "log-sum-exp",
    "log_softmax": "log-softmax",
    "softmax": "softmax",
    "linear_cross_entropy": "fused linear cross-entropy",
}


def _first_sentence(path: Path) -> str:
    """The first paragraph after the title, up to its first full stop, on one line."""
    text = path.read_text(encoding="utf-8")
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip() and not p.startswith("#")]
    para = " ".join(paragraphs[0].split()).replace("**", "")
    m = re.search(r"\.(\s|$)", para)
    return para[: m.start() + 1] if m else para


def test_pitch_names_every_public_function() -> None:
    assert set(PITCH) == set(jaxloss.__all__), (
        f"PITCH and jaxloss.__all__ differ: {sorted(set(PITCH) ^ set(jaxloss.__all__))}"
    )
    for path in (ROOT / "README.md", DOCS / "index.md"):
        sentence = _first_sentence(path)
        missing = {n: p for n, p in PITCH.items() if p not in sentence}
        assert not missing, f"{path.name}'s first sentence lacks {missing}: {sentence!r}"


def test_home_page_table_lists_every_public_function() -> None:
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    section = text.split("## The functions", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    named = {n for row in rows for n in re.findall(r"`(\w+)(?:\(|`)", row)}
    missing = set(jaxloss.__all__) - named
    assert not missing, f"docs/index.md's table of functions lacks {sorted(missing)}"


def _table_rows(path: Path) -> list[tuple[str, str]]:
    page = docs_helpers.parse(path)
    return [
        (left, right)
        for item in page.items
        if isinstance(item, docs_helpers.CallTable)
        for _, left, right in item.rows
    ]


def test_optax_page_has_a_row_for_every_drop_in() -> None:
    optax = pytest.importorskip("optax")
    drop_ins = set(dir(optax.losses)) & set(jaxloss.__all__)
    assert len(drop_ins) >= 8
    rows = _table_rows(DOCS / "migration-optax.md")
    missing = [
        n
        for n in sorted(drop_ins)
        if not any(f"optax.losses.{n}(" in a and f"jaxloss.{n}(" in b for a, b in rows)
    ]
    assert not missing, f"docs/migration-optax.md has no drop-in row for {missing}"


# The PyTorch (and torchvision) calls a reader comes with, each needing a row of its own.
TORCH_CALLS = [
    "F.binary_cross_entropy_with_logits(",
    "pos_weight=",
    "sigmoid_focal_loss(",
    "F.kl_div(",
    "T**2",
    "F.cross_entropy(",
    "F.nll_loss(",
]


def test_torch_page_has_a_row_for_every_public_function() -> None:
    rows = _table_rows(DOCS / "migration-torch.md")
    missing = [n for n in jaxloss.__all__ if not any(f"jaxloss.{n}(" in b for _, b in rows)]
    assert not missing, f"docs/migration-torch.md's table has no row calling {missing}"
    absent = [c for c in TORCH_CALLS if not any(c in a for a, _ in rows)]
    assert not absent, f"docs/migration-torch.md's table has no row with {absent}"


# --- no clipped code ---------------------------------------------------------------------------

# Characters a code block shows without scrolling sideways at a 1280 px window (Material, with
# the code font of docs/stylesheets/extra.css): the code box is 688 px wide inside its padding
# of 2 × 14.3 px, a character 7.32 px, so 90 fit; 88 leaves room for blocks in a list item.
# tests/test_docs_site.py checks the built pages for any block that still scrolls.
CODE_WIDTH = 88
# Pages other branches are rewriting (issue 20): checked once they fit, and the test says so.
CODE_WIDTH_PENDING: set[str] = set()


def _long_code_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for start, _end, _, body in docs_helpers._fences(lines):
        for i, line in enumerate(body.splitlines()):
            if len(line) > CODE_WIDTH:
                out.append(f"{path.relative_to(ROOT)}:{start + 2 + i}: {len(line)} characters")
    return out


@pytest.mark.parametrize(
    "path",
    [p for p in _pages() if p.parent in (ROOT, DOCS)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_code_lines_fit_the_site_width(path: Path) -> None:
    long = _long_code_lines(path)
    if str(path.relative_to(ROOT)) in CODE_WIDTH_PENDING:
        assert long, f"{path.name} fits now: remove it from CODE_WIDTH_PENDING"
        return
    assert not long, f"code lines wider than {CODE_WIDTH} characters:\n" + "\n".join(long)


# --- the helpers themselves --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "got", "ok"),
    [
        ("[0.2761 2.9518]", "[0.27611 2.95183]\n", True),
        ("0.3466", "0.3467", True),
        ("0.3466", "0.3469", False),
        ("1000.", "1000.4", False),
        ("1000.0", "1000.04", True),
        ("nan inf -inf", "nan inf -inf", True),
        ("-0.", "0.", False),
        ("0.0000", "0.00004", True),
        ("a ... b", "a 1 2 3 b", True),
        ("KL(p||q) = 0.1", "KL(q||p) = 0.1", False),
        ("[1. 2.]", "[1. 2. 3.]", False),
        ("[1. 2.]", "[1. 3.]", False),
        ("(3,)", "(4,)", False),
        ("-2.061154e-09", "-2.061155e-09", True),
        ("-2.061154e-09", "-2.061158e-09", False),
        ("inf", "1e308", False),
    ],
)
def test_output_matching(expected: str, got: str, ok: bool) -> None:
    assert docs_helpers.output_matches(expected, got) is ok


def test_parse_and_run(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "\n".join(
            [
                "```python",
                "x = 2",
                "print(x * 1.5)",
                "```",
                "",
                "```text",
                "3.0",
                "```",
                "<!-- docs-test: skip -->",
                "```python",
                "raise RuntimeError",
                "```",
                "<!-- equivalent-calls rtol=1e-3 -->",
                "| a | b |",
                "|---|---|",
                "| `x + 1` | `3.0001` |",
                "```python",
                ">>> x",
                "2",
                "```",
            ]
        )
    )
    parsed = docs_helpers.parse(page)
    assert [type(i).__name__ for i in parsed.items] == [
        "CodeBlock",
        "CodeBlock",
        "CallTable",
        "CodeBlock",
    ]
    docs_helpers.run_page(parsed)
    page.write_text("```python\nprint(1)\n```\n\n```text\n2\n```\n")
    with pytest.raises(docs_helpers.DocsError, match="differs"):
        docs_helpers.run_page(docs_helpers.parse(page))


def test_devices_directive_runs_the_block_alone_on_that_many_devices(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nx = 1\n```\n<!-- docs-test: devices 3 -->\n```python\nimport jax\n"
        "print(len(jax.devices()), 'x' in globals())\n```\n\n```text\n3 False\n```\n"
    )
    parsed = docs_helpers.parse(page)
    assert [getattr(i, "devices", None) for i in parsed.items] == [None, 3]
    docs_helpers.run_page(parsed)
    page.write_text("<!-- docs-test: devices 2 -->\n```python\nraise SystemExit(1)\n```\n")
    with pytest.raises(docs_helpers.DocsError, match="failed on 2 devices"):
        docs_helpers.run_page(docs_helpers.parse(page))


def test_docstring_markup_is_rewritten_for_mkdocs() -> None:
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("griffe_rst_math", EXT / "griffe_rst_math.py")
    assert spec is not None and spec.loader is not None
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    doc = "Sum :math:`x_j` over a :class:`~jax.sharding.Mesh`.\n\n.. math::\n\n    a = b\n\nArgs:"
    assert ext.rst_math_to_markdown(doc).splitlines() == [
        "Sum $x_j$ over a `jax.sharding.Mesh`.",
        "",
        "$$",
        "a = b",
        "$$",
        "",
        "Args:",
    ]
    names = frozenset({"cross_entropy"})
    linked = ext.rst_math_to_markdown("Use ``cross_entropy`` or ``jaxloss.cross_entropy``.", names)
    assert linked == (
        "Use [`cross_entropy`][jaxloss.cross_entropy] or [`cross_entropy`][jaxloss.cross_entropy]."
    )
    assert ext.rst_math_to_markdown("``softmax`` and ``x``", names) == "``softmax`` and ``x``"
    assert ext.rst_math_to_markdown(">>> ``cross_entropy``", names) == ">>> ``cross_entropy``"
    plain = "Loss.\n\nIn plain text: l = lse(x) - x_y,\n  per example.\n\n.. math::\n\n    a\n"
    assert ext.rst_math_to_markdown(plain).splitlines() == ["Loss.", "", "$$", "a", "$$"]


def test_benchmark_hook_without_and_with_results(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_hook", EXT / "bench_hook.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    assert "No results in this build" in hook.results_markdown(tmp_path)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "table.md").write_text("# Run\n\n| a |\n|---|\n| 1 |\n")
    (tmp_path / "bench" / "time_vs_classes.png").write_bytes(b"")
    out = hook.results_markdown(tmp_path)
    assert "## Run" in out and "![time vs classes](bench/time_vs_classes.png)" in out


# --- formulas -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Formula:
    """A docstring's ``.. math::`` (whitespace ignored) and its NumPy float64 transcription.

    `make(rng)` returns the arguments ``(args, kwargs)`` for jaxloss; `numpy(*args, **kwargs)`
    evaluates the formula on the same (float64 NumPy) arguments.
    """

    latex: str
    make: Callable[[np.random.Generator], tuple[tuple, dict]]
    numpy: Callable[..., Any]


B, K = 6, 7


def _logits(rng: np.random.Generator, shape: tuple[int, ...] = (B, K)) -> np.ndarray:
    return rng.normal(scale=3.0, size=shape)


def _probs(rng: np.random.Generator, zeros: bool = True) -> np.ndarray:
    p = rng.dirichlet(np.ones(K), size=B)
    if zeros:  # one class outside the support in each row, to exercise 0 log 0 = 0
        p[np.arange(B), rng.integers(0, K, B)] = 0.0
        p /= p.sum(-1, keepdims=True)
    return p


def _labels(rng: np.random.Generator, n: int = B, k: int = K) -> np.ndarray:
    return rng.integers(0, k, size=n)


def _max(x: np.ndarray) -> np.ndarray:
    return x.max(-1, keepdims=True)


def _lse(x: np.ndarray) -> np.ndarray:
    m = _max(x)
    return m[..., 0] + np.log(np.sum(np.exp(x - m), -1))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = _max(x)
    return (x - m) - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x·log y with 0·log y = 0 (the docstrings' convention for terms outside the support)."""
    return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def _take(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.take_along_axis(x, y[..., None], -1)[..., 0]


def _smoothed_ce(x, y, keep, eps, w, z):
    """(1−ε) w_y (lse − x_y) + ε/K' Σ_j w_j (lse − x_j) + z lse², sums over kept classes."""
    lse = _lse(np.where(keep, x, -np.inf))[..., None]
    k_kept = keep.sum(-1)
    smooth = np.sum(np.where(keep, w * (lse - x), 0.0), -1)
    lse = lse[..., 0]
    return (1 - eps) * w[y] * (lse - _take(x, y)) + eps / k_kept * smooth + z * lse**2


def _make_cross_entropy(rng):
    x, y = _logits(rng), _labels(rng)
    keep = rng.random((B, K)) < 0.7
    keep[np.arange(B), y] = True  # the label's class stays in
    kwargs = {
        "label_smoothing": 0.1,
        "class_weights": rng.uniform(0.5, 2.0, K),
        "z_loss": 1e-3,
    }
    return (x, y, -1, keep), kwargs


def _numpy_cross_entropy(x, y, axis, keep, *, label_smoothing, class_weights, z_loss):
    return _smoothed_ce(x, y, keep, label_smoothing, class_weights, z_loss)


def _make_linear(rng):
    n, d, v = 10, 5, 13
    h = rng.normal(size=(n, d))
    w = rng.normal(size=(d, v)) / np.sqrt(d)
    kwargs = {
        "bias": rng.normal(size=v),
        "label_smoothing": 0.1,
        "class_weights": rng.uniform(0.5, 2.0, v),
        "z_loss": 1e-3,
        "chunk_size": 4,  # several token chunks, the last one partial
    }
    return (h, w, _labels(rng, n, v)), kwargs


def _numpy_linear(h, weight, y, *, bias, label_smoothing, class_weights, z_loss, chunk_size):
    z = h @ weight + bias
    keep = np.ones(z.shape, bool)
    return _smoothed_ce(z, y, keep, label_smoothing, class_weights, z_loss)


def _numpy_focal(x, y, *, gamma, alpha):
    p_y = _take(np.exp(_log_softmax(x)), y)
    return -alpha[y] * (1 - p_y) ** gamma * np.log(p_y)


def _numpy_poly(x, t, *, epsilon):
    p = np.exp(_log_softmax(x))
    return -np.sum(_xlogy(t, p), -1) + epsilon * np.sum(t * (1 - p), -1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def _units(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(size=(B, K))
    t[0] = rng.integers(0, 2, K)  # hard labels too
    return t


def _make_bce(rng):
    kwargs = {
        "weight": rng.uniform(0.5, 2.0, K),
        "pos_weight": rng.uniform(0.5, 3.0, K),
        "label_smoothing": 0.1,
    }
    return (_logits(rng), _units(rng)), kwargs


def _numpy_bce(x, t, *, weight, pos_weight, label_smoothing):
    t = (1 - label_smoothing) * t + label_smoothing / 2
    s = _sigmoid(x)
    return -weight * (pos_weight * t * np.log(s) + (1 - t) * np.log1p(-s))


def _numpy_sigmoid_focal(x, t, *, alpha, gamma):
    one_minus_pt = (1 - t) * _sigmoid(x) + t * _sigmoid(-x)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * one_minus_pt**gamma * (np.logaddexp(0.0, x) - t * x)


def _kl_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(np.where(a == 0, 0.0, a * (np.log(np.where(a == 0, 1.0, a)) - np.log(b))), -1)


def _make_distill(rng):
    # Seeds 0, 1, 2 draw 1, 2, 0: each line of the formula's cases is checked once.
    beta = (0.0, 0.3, 1.0)[int(rng.integers(0, 1000)) % 3]
    return (_logits(rng), _logits(rng)), {"temperature": 1.7, "beta": beta}


def _numpy_distill(s, t, *, temperature, beta):
    p = np.exp(_log_softmax(t / temperature))
    q = np.exp(_log_softmax(s / temperature))
    if beta == 0:
        return _kl_rows(p, q)
    if beta == 1:
        return _kl_rows(q, p)
    m = beta * p + (1 - beta) * q
    return beta * _kl_rows(p, m) + (1 - beta) * _kl_rows(q, m)


def _make_accuracy(rng):
    x = rng.integers(-2, 3, size=(B, K)).astype(np.float64)  # ties
    return (x, _labels(rng)), {"k": 2, "reduction": "none"}


def _numpy_accuracy(x, y, *, k, reduction):
    xy = _take(x, y)[..., None]
    j = np.arange(x.shape[-1])
    ahead = (x > xy) | ((x == xy) & (j < y[..., None]))
    return (ahead.sum(-1) < k).astype(np.float64)


FORMULAS: dict[str, Formula] = {
    "logsumexp": Formula(
        r"\operatorname{LSE}(x) = m + \log\Big(\sum_j e^{x_j - m}\Big), \qquad m = \max_j x_j",
        lambda rng: ((_logits(rng),), {}),
        lambda x: _max(x)[..., 0] + np.log(np.sum(np.exp(x - _max(x)), -1)),
    ),
    "log_softmax": Formula(
        r"\log \operatorname{softmax}(x)_j = (x_j - m) - \log \sum_k e^{x_k - m}",
        lambda rng: ((_logits(rng),), {}),
        lambda x: (x - _max(x)) - np.log(np.sum(np.exp(x - _max(x)), -1, keepdims=True)),
    ),
    "softmax": Formula(
        r"\operatorname{softmax}(x)_j = \exp\Big((x_j - m) - \log \sum_k e^{x_k - m}\Big)",
        lambda rng: ((_logits(rng),), {}),
        lambda x: np.exp((x - _max(x)) - np.log(np.sum(np.exp(x - _max(x)), -1, keepdims=True))),
    ),
    "entropy": Formula(
        r"H(p) = -\sum_j p_j \log p_j, \qquad 0 \log 0 = 0",
        lambda rng: ((_probs(rng),), {}),
        lambda p: -np.sum(_xlogy(p, p), -1),
    ),
    "softmax_entropy": Formula(
        r"H(\operatorname{softmax}(x)) = \log \sum_k e^{x_k}"
        r" - \sum_j \operatorname{softmax}(x)_j\, x_j",
        lambda rng: ((_logits(rng),), {}),
        lambda x: _lse(x) - np.sum(np.exp(_log_softmax(x)) * x, -1),
    ),
    "kl_divergence": Formula(
        r"\mathrm{KL}(p \,\|\, q) = \sum_j p_j (\log p_j - \log q_j), \qquad"
        r" \text{terms with } p_j = 0 \text{ are } 0",
        lambda rng: ((_log_softmax(_logits(rng)), _probs(rng)), {}),
        lambda log_q, p: np.sum(np.where(p == 0, 0.0, _xlogy(p, p) - p * log_q), -1),
    ),
    "kl_divergence_with_log_targets": Formula(
        r"\mathrm{KL}(p \,\|\, q) = \sum_j e^{\log p_j} (\log p_j - \log q_j)",
        lambda rng: ((_log_softmax(_logits(rng)), np.log(_probs(rng, zeros=False))), {}),
        lambda log_q, log_p: np.sum(np.exp(log_p) * (log_p - log_q), -1),
    ),
    "softmax_cross_entropy_with_integer_labels": Formula(
        r"\ell_i = -\log \operatorname{softmax}(x_i)_{y_i} = \log \sum_j e^{x_{ij}} - x_{i y_i}",
        lambda rng: ((_logits(rng), _labels(rng)), {}),
        lambda x, y: np.log(np.sum(np.exp(x), -1)) - _take(x, y),
    ),
    "softmax_cross_entropy": Formula(
        r"\ell_i = -\sum_j t_{ij} \log \operatorname{softmax}(x_i)_j",
        lambda rng: ((_logits(rng), _probs(rng)), {}),
        lambda x, t: -np.sum(t * _log_softmax(x), -1),
    ),
    "cross_entropy": Formula(
        r"\ell = (1-\varepsilon)\, w_y (\mathrm{lse} - x_y)"
        r" + \frac{\varepsilon}{K'} \sum_j w_j (\mathrm{lse} - x_j) + \lambda_z\,\mathrm{lse}^2",
        _make_cross_entropy,
        _numpy_cross_entropy,
    ),
    "nll_loss": Formula(
        r"\ell_i = -w_{y_i} \log q_{i y_i}",
        lambda rng: (
            (_log_softmax(_logits(rng)), _labels(rng)),
            {"class_weights": rng.uniform(0.5, 2.0, K)},
        ),
        lambda log_q, y, *, class_weights: -class_weights[y] * _take(log_q, y),
    ),
    "softmax_focal_loss": Formula(
        r"\ell = -\alpha_y\,(1 - p_y)^{\gamma} \log p_y, \qquad p = \operatorname{softmax}(x)",
        lambda rng: (
            (_logits(rng), _labels(rng)),
            {"gamma": 1.5, "alpha": rng.uniform(0.25, 1.0, K)},
        ),
        _numpy_focal,
    ),
    "poly_loss_cross_entropy": Formula(
        r"\ell = -\sum_j t_j \log p_j + \varepsilon \sum_j t_j (1 - p_j), \qquad"
        r" p = \operatorname{softmax}(x)",
        lambda rng: ((_logits(rng), _probs(rng)), {"epsilon": 2.0}),
        _numpy_poly,
    ),
    "smooth_labels": Formula(
        r"t' = (1 - \alpha)\, t + \frac{\alpha}{K}",
        lambda rng: ((_probs(rng), 0.2), {}),
        lambda t, alpha: (1 - alpha) * t + alpha / t.shape[-1],
    ),
    "softmax_kl_divergence": Formula(
        r"D_\beta(p, q) = \begin{cases} \mathrm{KL}(p \,\|\, q) & \beta = 0 \\"
        r" \beta\, \mathrm{KL}(p \,\|\, m) + (1-\beta)\, \mathrm{KL}(q \,\|\, m) & 0 < \beta < 1"
        r" \\ \mathrm{KL}(q \,\|\, p) & \beta = 1 \end{cases}, \qquad m = \beta p + (1-\beta) q",
        _make_distill,
        _numpy_distill,
    ),
    "accuracy": Formula(
        r"a_i = \Big[\, \big|\{\, j : x_{ij} > x_{i y_i}"
        r" \ \text{or}\ (x_{ij} = x_{i y_i} \wedge j < y_i) \,\}\big| < k \,\Big]",
        _make_accuracy,
        _numpy_accuracy,
    ),
    "perplexity": Formula(
        r"\mathrm{PPL} = \exp\!\Big(\frac{S}{N}\Big)",
        lambda rng: ((rng.uniform(0, 50, B), rng.integers(1, 20, B).astype(np.float64)), {}),
        lambda s, n: np.exp(s / n),
    ),
    "linear_cross_entropy": Formula(
        r"\ell = (1 - \varepsilon)\, w_y\, (L - z_y)"
        r" + \frac{\varepsilon}{V} \sum_{j=1}^{V} w_j\, (L - z_j) + \lambda_z L^2 .",
        _make_linear,
        _numpy_linear,
    ),
    "sigmoid_binary_cross_entropy": Formula(
        r"\ell = -t \log \sigma(x) - (1 - t) \log\big(1 - \sigma(x)\big)"
        r" = \operatorname{softplus}(x) - t\,x",
        lambda rng: ((_logits(rng), _units(rng)), {}),
        lambda x, t: -t * np.log(_sigmoid(x)) - (1 - t) * np.log1p(-_sigmoid(x)),
    ),
    "binary_cross_entropy_with_logits": Formula(
        r"\ell = -w \big[p_w\, t' \log \sigma(x) + (1 - t') \log\big(1 - \sigma(x)\big)\big],"
        r" \qquad t' = (1-\varepsilon)\, t + \tfrac{\varepsilon}{2}",
        _make_bce,
        _numpy_bce,
    ),
    "sigmoid_focal_loss": Formula(
        r"\ell = \alpha_t\, (1 - p_t)^{\gamma}\, \big[\operatorname{softplus}(x) - t\,x\big],"
        r" \qquad 1 - p_t = (1 - t)\,\sigma(x) + t\,\sigma(-x)",
        lambda rng: ((_logits(rng), _units(rng)), {"alpha": 0.25, "gamma": 1.5}),
        _numpy_sigmoid_focal,
    ),
}


def _math_blocks(doc: str) -> list[str]:
    """The bodies of a docstring's ``.. math::`` directives, whitespace removed."""
    lines = inspect.cleandoc(doc).splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip().startswith(".. math::"):
            indent = len(line) - len(line.lstrip())
            body = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                body.append(nxt)
            blocks.append(re.sub(r"\s+", "", "".join(body)))
    return blocks


def test_every_public_function_has_a_formula() -> None:
    missing = sorted(set(jaxloss.__all__) - set(FORMULAS))
    assert not missing, (
        f"add the docstring formula of {missing} to FORMULAS in tests/test_docs.py, "
        "written as NumPy float64 code"
    )


def test_distill_formula_checks_every_mode() -> None:
    betas = {_make_distill(np.random.default_rng(seed))[1]["beta"] for seed in range(3)}
    assert betas == {0.0, 0.3, 1.0}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_docstring_formula(name: str) -> None:
    if name in jaxloss.__all__:
        fn = getattr(jaxloss, name)
    else:  # documented before it is exported (docs/api.md names its module): check it there
        fn = getattr(importlib.import_module(f"jaxloss._{name}"), name)
    formula = FORMULAS[name]
    blocks = _math_blocks(fn.__doc__ or "")
    assert re.sub(r"\s+", "", formula.latex) in blocks, (
        f"the `.. math::` of jaxloss.{name} changed; check its NumPy transcription in "
        f"FORMULAS and update the LaTeX there. Docstring has: {blocks}"
    )
    for seed in range(3):
        args, kwargs = formula.make(np.random.default_rng(seed))
        want = formula.numpy(*args, **kwargs)
        with jax.enable_x64(True):
            got = np.asarray(fn(*args, **kwargs))
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"seed {seed}")
