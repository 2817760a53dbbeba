"""Knowledge distillation from logits: forward KL, reverse KL and the generalised JSD.

With p = softmax(teacher/T) and q = softmax(student/T), the divergence and both gradients come
from the two log-softmaxes alone (no `log 0` is ever formed). The gradient is stated as a
`custom_jvp` rule, so forward mode (`jvp`, `hessian`) works and reverse mode is its transpose.
With respect to the tempered logits x = logits/T, each gradient is `r ⊙ (c − Σ r·c)` for the
distribution r the logits produce and `c = ∂D/∂r`; for the student under forward KL this is the
familiar `q − p`, for the teacher under reverse KL `p − q`. A class outside a distribution's
support (probability 0) contributes 0 and gets gradient 0 through a double `where`.

The tangent is `jax.checkpoint`ed: the backward pass rereads the logits and rebuilds the two
log-softmaxes from per-row statistics (shift and log-sum), so only the inputs and those per-row
numbers are kept, never a float32 `[..., K]` intermediate.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jaxloss import _checks, _impl, _options
from jaxloss._softmax import finite_log_sum, max_and_log_sum


def _row_stats(x: Array, fused_rows: bool = False) -> tuple[Array, Array]:
    """(m, log_s) of `x`, each [..., 1]: the shift and log Σ exp(x − m)."""
    m, _, log_s = max_and_log_sum(x, fused_rows)
    return m, log_s


def _log_probs(x: Array, stats: tuple[Array, Array]) -> tuple[Array, Array, Array]:
    """(log r, live, safe) for r = softmax(x): live where r > 0 (NaN counts as live, so a NaN
    row stays NaN), safe = log r with 0 where r = 0."""
    m, log_s = stats
    log_r = (x - m) - finite_log_sum(log_s)
    live = log_r != -jnp.inf
    return log_r, live, jnp.where(live, log_r, jnp.zeros_like(log_r))


@jax.custom_jvp
def _divide(x: Array, temperature: Array) -> Array:
    """x/T for a traced T; a −inf logit stays −inf, with derivative 0 w.r.t. T (not −inf·0)."""
    return x / temperature


@_divide.defjvp
def _divide_jvp(primals, tangents):
    (x, temperature), (tx, t_temp) = primals, tangents
    out = x / temperature
    finite = jnp.where(jnp.isfinite(out), out, jnp.zeros_like(out))
    return out, (tx - finite * t_temp) / temperature


def _tempered(temperature: float, s: Array, t: Array, mask: Array | None) -> list[Array]:
    """Both logits divided by T, in the compute dtype, masked classes −inf."""
    cdt = _checks.compute_dtype(jnp.result_type(s, t))
    out = []
    for x in (s, t):
        x = x.astype(cdt)
        if temperature != 1.0:
            x = x / temperature
        if mask is not None:
            x = jnp.where(mask, x, -jnp.inf)
        out.append(x)
    return out


def _kl_parts(live: Array, la: Array, lb: Array) -> tuple[Array, Array]:
    """(KL(a‖b), c) with c = log a − log b on a's support (`live`) and 0 elsewhere. `la` is the
    safe log a, `lb` log b as is: a class with a > 0 and b = 0 gives +inf, the true value."""
    c = jnp.where(live, la - jnp.where(live, lb, jnp.zeros_like(lb)), jnp.zeros_like(la))
    return jnp.sum(jnp.where(live, jnp.exp(la) * c, jnp.zeros_like(c)), axis=-1), c


def _centred(live: Array, log_r: Array, c: Array, mean: Array) -> Array:
    """r ⊙ (c − mean): the gradient w.r.t. logits of a function whose derivative w.r.t. the
    probabilities r is c (softmax's Jacobian), 0 off r's support. NaN on a row whose
    divergence is +inf: it has no derivative there."""
    g = jnp.where(live, jnp.exp(log_r) * (c - mean[..., None]), jnp.zeros_like(c))
    return jnp.where((mean == jnp.inf)[..., None], jnp.nan, g)


def _parts(beta: float, xs: Array, xt: Array, stats: tuple, want_s: bool, want_t: bool):
    """(D, ∂D/∂xs, ∂D/∂xt) for tempered, masked logits and their row statistics; a gradient
    is None unless wanted."""
    if not _checks.is_static(beta):
        return _parts_traced(beta, xs, xt, stats, want_s, want_t)[:3]
    rq, live_q, lq = _log_probs(xs, stats[0])
    rp, live_p, lp = _log_probs(xt, stats[1])
    gs = gt = None
    if beta == 0.0:  # KL(p ‖ q)
        d, c = _kl_parts(live_p, lp, rq)
        if want_s:
            gs = jnp.where(live_q, jnp.exp(lq), 0) - jnp.where(live_p, jnp.exp(lp), 0)
        if want_t:
            gt = _centred(live_p, lp, c, d)
    elif beta == 1.0:  # KL(q ‖ p)
        d, c = _kl_parts(live_q, lq, rp)
        if want_s:
            gs = _centred(live_q, lq, c, d)
        if want_t:
            gt = jnp.where(live_p, jnp.exp(lp), 0) - jnp.where(live_q, jnp.exp(lq), 0)
    else:  # β KL(p ‖ m) + (1 − β) KL(q ‖ m), m = β p + (1 − β) q
        d, gs, gt, _ = _jsd(beta, live_q, lq, live_p, lp, want_s, want_t)
    return d, gs, gt


def _jsd(beta, live_q, lq, live_p, lp, want_s, want_t):
    """(D, ∂D/∂xs, ∂D/∂xt, ∂D/∂β) of the generalised JSD, 0 < β < 1 (a Python number, or a
    traced array)."""
    gs = gt = None
    if _checks.is_static(beta):
        log_b, log_1mb = math.log(beta), math.log1p(-beta)
    else:
        log_b, log_1mb = jnp.log(beta), jnp.log1p(-beta)
    live_m = live_p | live_q
    # log m as a log-sum of two terms; each safe log is 0 off its support, so mask it out.
    ap = jnp.where(live_p, lp + log_b, -jnp.inf)
    aq = jnp.where(live_q, lq + log_1mb, -jnp.inf)
    hi = jnp.maximum(ap, aq)  # a shift: log m does not depend on it, so a tie's split cancels
    hi = jnp.where(live_m, hi, jnp.zeros_like(hi))
    total = jnp.exp(ap - hi) + jnp.exp(aq - hi)
    lm = jnp.where(live_m, hi + jnp.log(jnp.where(live_m, total, 1)), jnp.zeros_like(hi))
    kp, cp = _kl_parts(live_p, lp, lm)
    kq, cq = _kl_parts(live_q, lq, lm)
    d = beta * kp + (1.0 - beta) * kq
    # ∂D/∂p_j = β (log p_j − log m_j) and ∂D/∂q_j = (1 − β)(log q_j − log m_j): the
    # derivatives of Σ m log m and of the two Σ r log r terms cancel their constants.
    if want_s:
        gs = _centred(live_q, lq, (1.0 - beta) * cq, (1.0 - beta) * kq)
    if want_t:
        gt = _centred(live_p, lp, beta * cp, beta * kp)
    # ∂D/∂β = KL(p ‖ m) − KL(q ‖ m): the terms through m sum to −Σ_j (p_j − q_j) = 0.
    return d, gs, gt, kp - kq


def _parts_traced(beta, xs, xt, stats, want_s, want_t):
    """`_parts` for a traced β: forward KL at β = 0, reverse KL at β = 1, the JSD between (each
    computed, one selected per value), and ∂D/∂β (0 at the two ends, where D does not depend
    on β). A NaN β (out of range) gives NaN."""
    _, live_q, lq = _log_probs(xs, stats[0])
    _, live_p, lp = _log_probs(xt, stats[1])
    inside = (beta > 0) & (beta < 1)
    b = jnp.where(inside, beta, jnp.full_like(beta, 0.5))  # no log 0 in the branch not taken
    ends = [_parts(end, xs, xt, stats, want_s, want_t) for end in (0.0, 1.0)]
    mid = _jsd(b, live_q, lq, live_p, lp, want_s, want_t)
    nan = jnp.isnan(beta)

    def pick(a0: Any, a1: Any, a_mid: Any) -> Any:
        if a0 is None:
            return None
        out = jnp.where(beta == 0, a0, jnp.where(beta == 1, a1, a_mid))
        return jnp.where(nan, jnp.full_like(out, jnp.nan), out)

    d_beta = jnp.where(inside, mid[3], jnp.zeros_like(mid[3]))
    picked = [pick(*parts) for parts in zip(*ends, mid[:3], strict=True)]
    return (*picked, jnp.where(nan, jnp.full_like(d_beta, jnp.nan), d_beta))


def _kd_impl(beta, temperature, s, t, mask, beta_t):
    """`beta`: β as a Python number, or None with a traced β in `beta_t` (None otherwise)."""
    beta = beta if beta_t is None else beta_t
    xs, xt = _tempered(temperature, s, t, mask)
    stats = (_row_stats(xs, True), _row_stats(xt, True))
    return _parts(beta, xs, xt, stats, False, False)[0]


_kd = jax.custom_jvp(_kd_impl, nondiff_argnums=(0, 1))


def _kd_tangent(beta, temperature, s, t, mask, stats, ts, tt, beta_t=None):
    beta = beta if beta_t is None else beta_t
    xs, xt = _tempered(temperature, s, t, mask)
    _, gs, gt = _parts(beta, xs, xt, stats, ts is not None, tt is not None)
    out = jnp.zeros(xs.shape[:-1], xs.dtype)
    # d(x/T) = dx/T; masked classes have a zero gradient entry.
    if gs is not None:
        out = out + jnp.sum(gs * ts.astype(xs.dtype), axis=-1) / temperature
    if gt is not None:
        out = out + jnp.sum(gt * tt.astype(xs.dtype), axis=-1) / temperature
    return out


def _kd_jvp(beta, temperature, primals, tangents):
    s, t, mask, beta_t = primals
    ts, tt = (None if isinstance(v, SymbolicZero) else v for v in tangents[:2])
    t_beta = None if beta_t is None or isinstance(tangents[3], SymbolicZero) else tangents[3]
    xs, xt = _tempered(temperature, s, t, mask)
    stats = (_row_stats(xs), _row_stats(xt))
    if beta_t is None:
        loss = _parts(beta, xs, xt, stats, False, False)[0]
        t_loss = None
    else:
        loss, _, _, d_beta = _parts_traced(beta_t, xs, xt, stats, False, False)
        t_loss = None if t_beta is None else d_beta * t_beta.astype(d_beta.dtype)
    if ts is None and tt is None:
        return loss, jnp.zeros_like(loss) if t_loss is None else t_loss
    # Checkpointed: the backward pass rereads the logits and keeps only the per-row statistics.
    tangent = functools.partial(_kd_tangent, beta, temperature)
    if beta_t is None:
        return loss, _impl.recompute(tangent, s, t, mask, stats, ts, tt)
    out = _impl.recompute(tangent, s, t, mask, stats, ts, tt, beta_t)
    return loss, out if t_loss is None else out + t_loss


_kd.defjvp(_kd_jvp, symbolic_zeros=True)


@_checks.public
def softmax_kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    beta: float = 0.0,
    weights: ArrayLike | None = None,
    reduction: str = "none",
) -> Array | tuple[Array, Array]:
    r"""Distillation divergence between tempered teacher and student softmaxes, from logits.

    With :math:`p = \operatorname{softmax}(t/T)` (teacher) and
    :math:`q = \operatorname{softmax}(s/T)` (student), ``beta`` picks the divergence as
    TRL's ``GKDTrainer`` and Liger-Kernel's ``LigerJSD`` do: 0 is forward KL (the default, as in
    Hinton et al.), 1 is reverse KL, and in between the generalised Jensen-Shannon divergence of
    Agarwal et al., whose mixture puts weight ``beta`` on the teacher.

    In plain text: D = KL(p‖q) for β = 0; KL(q‖p) for β = 1; β·KL(p‖m) + (1−β)·KL(q‖m) with
    m = β·p + (1−β)·q for 0 < β < 1; KL(a‖b) = Σ_j a_j (log a_j − log b_j), 0·log 0 = 0.

    .. math::
        D_\beta(p, q) = \begin{cases}
            \mathrm{KL}(p \,\|\, q) & \beta = 0 \\
            \beta\, \mathrm{KL}(p \,\|\, m) + (1-\beta)\, \mathrm{KL}(q \,\|\, m)
                & 0 < \beta < 1 \\
            \mathrm{KL}(q \,\|\, p) & \beta = 1
        \end{cases}, \qquad m = \beta p + (1-\beta) q

    The endpoints are the conventions of TRL and Liger, not limits: as ``beta`` → 0 the middle
    line tends to 0 like ``beta·KL(p‖q)`` (and to 0 like ``(1−beta)·KL(q‖p)`` as ``beta`` → 1),
    so a small ``beta`` behaves like a down-weighted forward KL.

    Temperature: the result is the divergence of the tempered distributions, **not** multiplied
    by :math:`T^2`. Hinton et al. multiply the distillation term by :math:`T^2` because its
    gradient scales as :math:`1/T^2` for large ``T``; that factor is a training weight, like the
    mix with the hard-label loss, so write it where the weights are:
    ``alpha * cross_entropy(s, y) + (1 - alpha) * temperature**2 * softmax_kl_divergence(s, t,
    temperature=temperature)``. Unscaled, the value is the divergence itself, the number Optax's
    ``kl_divergence(log_softmax(s/T), softmax(t/T))`` and PyTorch's ``kl_div`` give.

    Padding and ignored tokens: pass an example mask, e.g. ``where=labels != -100`` for labels
    shaped like the batch: those tokens give 0 with gradient 0 and leave the ``"mean"``'s count,
    as ``cross_entropy(..., ignore_index=-100)`` does.

    Args:
        student_logits: ``[..., K]`` student logits :math:`s`, floating dtype.
        teacher_logits: ``[..., K]`` teacher logits :math:`t`, the same shape. Differentiable
            too (wrap it in ``jax.lax.stop_gradient`` for a frozen teacher; its gradient is then
            not computed).
        axis: the class axis or tuple of axes.
        where: boolean mask shaped like the logits (classes left out of both softmaxes) or like
            the batch (examples dropped: 0, gradient 0, not counted by ``"mean"``).
        temperature: :math:`T > 0`, dividing both logits.
        beta: :math:`\beta \in [0, 1]`: 0 forward KL, 1 reverse KL, in between JSD.

            ``temperature`` and ``beta`` may be traced (a schedule's value under ``jit``),
            and are then differentiable (``∂D/∂β = KL(p‖m) − KL(q‖m)`` between the ends, 0 at
            them); a traced value outside its range gives NaN. A traced ``beta`` computes the
            three divergences and selects one per value.
        weights: optional per-example (token) weights ``s`` of the batch shape (or
            broadcasting to it), differentiable: each divergence becomes ``s·D`` and
            ``"mean"`` is ``Σ s·D / Σ s`` over the kept examples (``"sum_and_count"`` returns
            ``Σ s``).
        reduction: ``"none"`` (per example), ``"sum"``, ``"mean"`` (over the kept examples; 0
            when none is kept) or ``"sum_and_count"``.

    Returns:
        ``[...]`` divergences for ``"none"``, a scalar for ``"sum"``/``"mean"``, a pair for
        ``"sum_and_count"``; float32 for bf16/f16 inputs.

    Numerics:
        Computed from the two log-softmaxes, in float32 for bf16/f16 inputs. The gradient is
        hand-derived: w.r.t. the student logits it is ``(q − p)/T`` for forward KL,
        ``q ⊙ (c − Σ q c)/T`` with ``c = log q − log p`` for reverse KL and
        ``q ⊙ (u − Σ q u)/T`` with ``u = (1−β)(log q − log m)`` for JSD, and symmetrically
        w.r.t. the teacher. A class the teacher gives probability 0 (logit ``-inf``)
        contributes 0 to forward KL with gradient 0; a class where the teacher has mass and the
        student logit is ``-inf`` gives ``+inf``, the true value, with the finite student
        gradient ``(q − p)/T`` (the teacher's gradient on that row is NaN). Reverse KL mirrors
        this: ``+inf`` where the student has mass outside the teacher's support, with a NaN
        student gradient there (mask such classes with ``where``). JSD is finite wherever one of
        the two has mass. ``+inf`` or NaN logits give NaN; masked examples give 0 and gradient 0
        whatever their logits.

    References:
        Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015,
        arXiv:1503.02531. Agarwal et al., "On-Policy Distillation of Language Models: Learning
        from Self-Generated Mistakes", ICLR 2024, arXiv:2306.13649.

    Examples:
        >>> import jax.numpy as jnp
        >>> import jaxloss
        >>> student = jnp.array([[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
        >>> teacher = jnp.array([[3.0, 0.5, -jnp.inf], [0.0, 1.0, 2.0]])
        >>> print(jaxloss.softmax_kl_divergence(student, teacher))  # forward KL(p ‖ q)
        [0.2149 0.1565]
        >>> print(jaxloss.softmax_kl_divergence(student, teacher, temperature=2.0, beta=0.5))
        [0.0823 0.0118]
        >>> # Reverse KL: the student has mass on class 2, where the teacher has none.
        >>> print(jaxloss.softmax_kl_divergence(student, teacher, beta=1.0))
        [   inf 0.1146]
    """
    fn = "softmax_kl_divergence"
    _checks.check_reduction(reduction, fn)
    temp = _checks.traced_number(temperature, "temperature", fn, low=0.0, low_open=True)
    b = _checks.traced_number(beta, "beta", fn, low=0.0, high=1.0)
    _checks.check_floating(student_logits, "student_logits", fn)
    _checks.check_floating(teacher_logits, "teacher_logits", fn)
    _checks.check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits", fn)
    s = jnp.asarray(student_logits)
    t = jnp.asarray(teacher_logits)
    axes = _checks.canonicalize_axes(axis, s.ndim, "student_logits", s.shape, fn)
    _checks.check_static_classes(s.shape, axes, "student_logits", fn)
    example_mask, class_mask = _checks.split_where(where, s.shape, axes, fn)
    s = _checks.classes_last(s, axes)
    t = _checks.classes_last(t, axes)
    mask = None
    if class_mask is not None:
        mask = _checks.classes_last(class_mask, axes)
    elif example_mask is not None:
        mask = jnp.broadcast_to(example_mask[..., None], s.shape)
    cdt = _checks.compute_dtype(jnp.result_type(s, t))
    if not _checks.is_static(temp):
        # A traced T divides outside the rule (its derivative by autodiff of `_divide`).
        temp_t = temp.astype(cdt)
        s, t, temp = _divide(s.astype(cdt), temp_t), _divide(t.astype(cdt), temp_t), 1.0
    beta_t = None
    if not _checks.is_static(b):
        b, beta_t = None, b.astype(cdt)
    loss = _kd(b, temp, s, t, mask, beta_t)
    valid = None
    if reduction != "none" and mask is not None:
        # A fully masked row (an example mask, or a class mask leaving nothing) is not counted.
        valid = jnp.any(mask, axis=-1)
    w = _options.example_weights(weights, loss.shape, fn, "the batch shape of the logits")
    return _options.reduce(loss, reduction, valid, None, w)
