"""Inner-loop policy-gradient estimators: the per-step weight w_t whose advantage-weighted mean is the inner loss.

inner loss = -E[w_t A_t]. All three weights have the same gradient at the parameters that sampled the episodes
(E[grad log pi A], so the adapted parameters are the same); they differ in the second derivative that a
second-order meta-gradient takes through the inner step. With advantages in place of rewards (the causal form),
the Hessian of the expected return is E[sum_t A_t grad^2 log pi_t + sum_{s,u} A_max(s,u) grad log pi_s grad
log pi_u^T]:

- ``reinforce``: w_t = log pi_t (Williams 1992; the MAML code's). Its Hessian keeps only E[grad^2 log pi A].
- ``lvc``: w_t = pi_t / stop_grad(pi_t), ProMP's low-variance curvature estimator (Rothfuss et al., "ProMP:
  Proximal Meta-Policy Search", ICLR 2019, sec. 5): adds the same-step outer products (s = u), drops s != u.
- ``dice``: w_t = box(c_t) - box(c_{t-1}) with c_t = sum_{t' <= t} log pi_t' and box(x) = exp(x - stop_grad(x)),
  the magic box of DiCE (Foerster et al., ICML 2018) with the advantage as its baseline (Farquhar et al., "Loaded
  DiCE", NeurIPS 2019, lambda = 1): unbiased derivatives of every order, higher variance.

`reference`, when given, is the log-probability the stop-gradient stands for (the sampling policy's: ProMP's
importance-weighted inner step at parameters that moved since sampling); by default the current one.
"""

from __future__ import annotations

import torch

ESTIMATORS = ("reinforce", "lvc", "dice")


def magic_box(x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """exp(x - stop_grad(x)): value 1 (or exp(x - reference)), derivative of every order = its own times x's."""
    return torch.exp(x - (x.detach() if reference is None else reference))


def step_weights(estimator: str, log_prob: torch.Tensor, mask: torch.Tensor,
                 reference: torch.Tensor | None = None) -> torch.Tensor:
    """The weights w_t (shape of `log_prob`, (K, T, N): time on axis 1) of `estimator` for the inner loss."""
    if estimator == "reinforce":
        return log_prob
    if estimator == "lvc":
        return magic_box(log_prob, reference)
    if estimator == "dice":
        cum = torch.cumsum(log_prob * mask, dim=1)
        ref = None if reference is None else torch.cumsum(reference * mask, dim=1)
        box = magic_box(cum, ref)
        before = torch.cat([torch.ones_like(box[:, :1]), box[:, :-1]], dim=1)  # box(c_{-1}) = box(0) = 1
        return box - before
    raise ValueError(f"estimator {estimator!r} is not one of {', '.join(ESTIMATORS)}")
