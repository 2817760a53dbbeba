"""jaxloss: correct, fast classification losses for JAX.

Cross-entropy with integer labels or soft targets (also fused with the last layer for large
vocabularies), negative log-likelihood, focal and poly losses, label smoothing, sigmoid
cross-entropy and focal loss for binary and multi-label classification, KL divergence,
distillation from logits, entropy, accuracy and perplexity, and stable normalisers. Optax's
call shape (predictions first, targets second, then ``axis`` and ``where``) and PyTorch's
options, hand-derived gradients, and finite results wherever the mathematics is finite.
"""

from jaxloss._binary import (
    binary_cross_entropy_with_logits as binary_cross_entropy_with_logits,
)
from jaxloss._binary import sigmoid_binary_cross_entropy as sigmoid_binary_cross_entropy
from jaxloss._binary import sigmoid_focal_loss as sigmoid_focal_loss
from jaxloss._cross_entropy import cross_entropy as cross_entropy
from jaxloss._cross_entropy import nll_loss as nll_loss
from jaxloss._cross_entropy import softmax_cross_entropy as softmax_cross_entropy
from jaxloss._cross_entropy import (
    softmax_cross_entropy_with_integer_labels as softmax_cross_entropy_with_integer_labels,
)
from jaxloss._distill import softmax_kl_divergence as softmax_kl_divergence
from jaxloss._entropy import entropy as entropy
from jaxloss._entropy import kl_divergence as kl_divergence
from jaxloss._entropy import kl_divergence_with_log_targets as kl_divergence_with_log_targets
from jaxloss._entropy import softmax_entropy as softmax_entropy
from jaxloss._linear_cross_entropy import linear_cross_entropy as linear_cross_entropy
from jaxloss._metrics import accuracy as accuracy
from jaxloss._metrics import perplexity as perplexity
from jaxloss._softmax import log_softmax as log_softmax
from jaxloss._softmax import logsumexp as logsumexp
from jaxloss._softmax import softmax as softmax
from jaxloss._variants import poly_loss_cross_entropy as poly_loss_cross_entropy
from jaxloss._variants import smooth_labels as smooth_labels
from jaxloss._variants import softmax_focal_loss as softmax_focal_loss

__version__ = "0.1.0"

__all__ = [
    "accuracy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "entropy",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "linear_cross_entropy",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "perplexity",
    "poly_loss_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "smooth_labels",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "softmax_entropy",
    "softmax_focal_loss",
    "softmax_kl_divergence",
]
