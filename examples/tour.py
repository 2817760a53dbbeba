"""A printed tour of jaxloss: entropy, KL, cross-entropy and NLL on a small batch, in nats and bits,
and the identities that tie them together, each checked as it is printed."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxloss

np.set_printoptions(precision=4, suppress=True)


def show(label: str, value, unit: str = "") -> None:
    print(f"  {label:<38} {np.asarray(value)} {unit}")


def check(label: str, a, b, tol: float = 1e-5) -> None:
    err = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
    status = "ok" if err <= tol else "FAILED"
    print(f"  {label:<58} max |diff| = {err:.1e}  {status}")
    if err > tol:
        raise SystemExit(f"identity failed: {label}")


def main() -> None:
    key = jax.random.PRNGKey(0)
    logits = jax.random.normal(key, (4, 5)) * 2.0  # a batch of 4 examples, 5 classes
    labels = jnp.array([0, 3, 1, 4])
    soft = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (4, 5)))  # soft targets p
    q = jaxloss.softmax(logits)
    log_q = jaxloss.log_softmax(logits)
    one_hot = jax.nn.one_hot(labels, 5)

    print("jaxloss tour: 4 examples, 5 classes; p = soft targets, q = softmax(logits)\n")
    print("Each example's class distribution is compared, not the distribution of samples.")
    show("q = softmax(logits), row 0", q[0])
    show("p (soft target), row 0", soft[0])

    print("\n1. Entropy H(p) = -Σ p log p: the average information of p")
    show("H(p)", jaxloss.entropy(soft), "nats")
    show("H(p)", jaxloss.entropy(soft, base=2), "bits")
    check("bits = nats / ln 2", jaxloss.entropy(soft, base=2), jaxloss.entropy(soft) / math.log(2))
    show("H(one-hot)", jaxloss.entropy(one_hot), "nats (0 log 0 = 0)")

    print("\n2. KL divergence: the extra cost of coding p with a code built for q")
    kl_pq = jaxloss.kl_divergence(log_q, soft)
    kl_qp = jaxloss.kl_divergence(jnp.log(soft), q)
    show("KL(p‖q)", kl_pq, "nats")
    show("KL(q‖p)", kl_qp, "nats  (not symmetric)")
    show("KL(p‖q) in bits", kl_pq / math.log(2), "bits")
    check("KL(p‖p) = 0", jaxloss.kl_divergence(jnp.log(soft), soft), 0.0)
    assert np.all(np.asarray(kl_pq) >= 0), "KL must be non-negative"

    print("\n3. Cross-entropy H(p, q) = -Σ p log q = H(p) + KL(p‖q)")
    ce = jaxloss.softmax_cross_entropy(logits, soft)
    show("H(p, q)", ce, "nats")
    show("H(p, q)", ce / math.log(2), "bits")
    check("CE = H(p) + KL(p‖q)", ce, jaxloss.entropy(soft) + kl_pq)

    print("\n4. One-hot targets: H(p) = 0, so CE = KL = -log q_y = NLL of log_softmax")
    ce_int = jaxloss.cross_entropy(logits, labels)
    show("cross_entropy(logits, y)", ce_int, "nats")
    check("CE(int labels) = CE(one-hot)", ce_int, jaxloss.softmax_cross_entropy(logits, one_hot))
    check("CE = KL(one-hot‖q)", ce_int, jaxloss.kl_divergence(log_q, one_hot))
    check("CE = nll_loss(log_softmax(logits), y)", ce_int, jaxloss.nll_loss(log_q, labels))
    check("CE = -log q_y", ce_int, -jnp.log(q[jnp.arange(4), labels]))

    print("\n5. The gradient: ∂CE/∂logits = softmax(logits) - one_hot(y)")
    grad = jax.grad(lambda x: jnp.sum(jaxloss.cross_entropy(x, labels)))(logits)
    show("gradient, row 0", grad[0])
    show("softmax - one_hot, row 0", q[0] - one_hot[0])
    check("gradient = softmax - one_hot", grad, q - one_hot)
    grad_soft = jax.grad(lambda x: jnp.sum(jaxloss.softmax_cross_entropy(x, soft)))(logits)
    check("gradient (soft targets) = softmax - p", grad_soft, q - soft)

    print("\n6. Where plain autodiff loses digits: p_y = 1 - 1e-6")
    x = jnp.array([[0.0, math.log(1e-6)]])
    exact = -1e-6 / (1 + 1e-6)
    ours = jax.grad(lambda x: jnp.sum(jaxloss.cross_entropy(x, jnp.array([0]))))(x)[0, 0]
    plain = jax.grad(lambda x: -jax.nn.log_softmax(x)[0, 0])(x)[0, 0]
    print(f"  exact p_y - 1 = {exact:.9e}")
    print(f"  jaxloss       = {float(ours):.9e}  (rel. error {abs(ours - exact) / -exact:.1e})")
    print(f"  autodiff      = {float(plain):.9e}  (rel. error {abs(plain - exact) / -exact:.1e})")
    print("\nAll identities hold.")


if __name__ == "__main__":
    main()
