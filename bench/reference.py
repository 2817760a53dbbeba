"""The float64 NumPy reference, and the errors of an implementation's outputs against it.

The inputs are rounded to their dtype first, then upcast exactly to float64, so an error measures
the implementation, not the rounding of its inputs. Everything runs over blocks of rows (a
float64 copy of 4096 x 128256 logits alone would be 4 GiB): the reference keeps per-row values
and, for the model step, the gradients w.r.t. h and W.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BLOCK_ELEMENTS = 1 << 23  # rows per block * classes; 64 MiB per float64 temporary


def rows_f64(a: Any, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of a JAX array, NumPy array or torch tensor, as float64 NumPy."""
    if hasattr(a, "detach"):  # torch; bf16 tensors have no .numpy()
        return a[start:stop].detach().to("cpu").double().numpy()
    return np.asarray(a[start:stop]).astype(np.float64)


def host(a: Any) -> Any:
    return a.detach().to("cpu") if hasattr(a, "detach") else np.asarray(a)


def _blocks(batch: int, classes: int):
    step = max(1, BLOCK_ELEMENTS // max(classes, 1))
    for start in range(0, batch, step):
        yield start, min(batch, start + step)


def _lse(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1)
    m = np.where(np.isfinite(m), m, 0.0)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=1))


@dataclass
class Reference:
    """Per-row float64 log-sum-exp and loss of one (x, y)."""

    x: Any  # host view of the logits (any dtype)
    y: np.ndarray
    lse: np.ndarray
    loss: np.ndarray

    @classmethod
    def of(cls, x: Any, y: Any) -> Reference:
        xh, yh = host(x), np.asarray(y).astype(np.int64)
        lse, loss = np.empty(len(yh)), np.empty(len(yh))
        for a, b in _blocks(*xh.shape):
            xb = rows_f64(xh, a, b)
            lse[a:b] = _lse(xb)
            loss[a:b] = lse[a:b] - xb[np.arange(b - a), yh[a:b]]
        return cls(xh, yh, lse, loss)

    def errors(self, mode: str, out: Any) -> dict[str, float | None]:
        """forward: max abs error per example; value_and_grad: the sum's error over the batch,
        and the max abs error of the gradient, softmax - one_hot."""
        if mode == "forward":
            err = np.max(np.abs(rows_f64(host(out), 0, len(self.loss)) - self.loss))
            return {"loss_err": float(err), "grad_err": None}
        value, grad = out
        g, worst = host(grad), 0.0
        for a, b in _blocks(*self.x.shape):
            p = np.exp(rows_f64(self.x, a, b) - self.lse[a:b, None])
            p[np.arange(b - a), self.y[a:b]] -= 1.0
            worst = max(worst, float(np.max(np.abs(rows_f64(g, a, b) - p))))
        sum_err = abs(float(value) - float(self.loss.sum())) / len(self.loss)
        return {"loss_err": sum_err, "grad_err": worst}


@dataclass
class ModelReference:
    """Float64 summed loss and gradients w.r.t. h and W of sum(CE(h @ W, y))."""

    loss_sum: float
    dh: np.ndarray
    dw: np.ndarray

    @classmethod
    def of(cls, h: Any, w: Any, y: Any) -> ModelReference:
        hh, yh = host(h), np.asarray(y).astype(np.int64)
        wf = rows_f64(host(w), 0, w.shape[0])
        dh, dw, total = np.empty((hh.shape[0], wf.shape[0])), np.zeros_like(wf), 0.0
        for a, b in _blocks(hh.shape[0], wf.shape[1]):
            hb = rows_f64(hh, a, b)
            logits = hb @ wf
            lse, rows = _lse(logits), np.arange(b - a)
            total += float((lse - logits[rows, yh[a:b]]).sum())
            g = np.exp(logits - lse[:, None])
            g[rows, yh[a:b]] -= 1.0
            dh[a:b] = g @ wf.T
            dw += hb.T @ g
        return cls(total, dh, dw)

    def errors(self, mode: str, out: Any) -> dict[str, float | None]:
        """The sum's error over the batch; the larger of dh's and dW's max abs error, each
        relative to its largest reference entry."""
        value, grads = out
        errs = []
        for got, ref in zip(grads, (self.dh, self.dw), strict=True):
            g = rows_f64(host(got), 0, ref.shape[0])
            errs.append(float(np.max(np.abs(g - ref)) / max(float(np.max(np.abs(ref))), 1e-300)))
        return {"loss_err": abs(float(value) - self.loss_sum) / len(self.dh), "grad_err": max(errs)}
