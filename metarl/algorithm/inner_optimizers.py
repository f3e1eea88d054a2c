"""Learned inner-loop update rules: Meta-SGD and the Kronecker-factored meta-optimiser (KFO), as meta-parameters.

The inner step of `adapt` is theta'_k = theta_k - lr * P_k(g_k) for each adapted parameter k, with P the identity
for `sgd` (today's rule) and, for the learned rules, a preconditioner whose parameters the outer loop learns with
the policy's:
- `meta-sgd` (Li, Zhou, Chen, Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", 2017): one step size
  per parameter entry, P(g) = s * g elementwise; the step size is lr * s;
- `kfo` (Arnold, Iqbal, Sha, "When MAML Can Adapt Fast and How to Assist When It Cannot", AISTATS 2021): for an
  n x m weight gradient G, P(G) = L G R with learned n x n and m x m factors (L^T L and R^T R with `kfo_psd`, which
  keeps P positive semi-definite); a vector (a bias, log_std) gets an elementwise factor.
Every factor starts at the identity (s = 1), so a learned rule starts exactly where `sgd` starts with the same lr;
keeping lr outside P lets the evaluation's step-size schedule (eval_first_lr, eval_later_lr) apply unchanged.

The factors live in an `InnerRule` attached to the policy as its submodule `inner_rule`: they are then in the
policy's parameters (the meta-parameters TRPO and ProMP update and the checkpoint saves) and in every parameter
dict, from which `precondition` reads them, so the meta-gradient and TRPO's Fisher J^T H J go through them.
"""

from __future__ import annotations

import torch
from torch import nn

INNER_OPTIMIZERS = ("sgd", "meta-sgd", "kfo")
RULE = "inner_rule"  # the policy's submodule, so its parameters are named inner_rule.<kind>.<key>
PREFIX = f"{RULE}."


def _safe(key: str) -> str:
    """A parameter name as a ParameterDict key (no dots): head.weight -> head__weight."""
    return key.replace(".", "__")


class InnerRule(nn.Module):
    """The learned factors of one rule for the adapted parameters `keys` of `policy`, all at the identity."""

    def __init__(self, policy: nn.Module, keys: list[str], kind: str, psd: bool = False):
        super().__init__()
        if kind not in INNER_OPTIMIZERS[1:]:
            raise ValueError(f"unknown learned inner optimizer {kind!r}; allowed: "
                             f"{', '.join(repr(k) for k in INNER_OPTIMIZERS[1:])}")
        self.kind, self.psd = kind, psd
        self.scale, self.left, self.right = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        for key in keys:
            p = policy.get_parameter(key)
            if kind == "kfo" and p.dim() == 2:
                self.left[_safe(key)] = nn.Parameter(torch.eye(p.shape[0], dtype=p.dtype, device=p.device))
                self.right[_safe(key)] = nn.Parameter(torch.eye(p.shape[1], dtype=p.dtype, device=p.device))
            else:  # Meta-SGD everywhere; KFO's factor of a vector
                self.scale[_safe(key)] = nn.Parameter(torch.ones_like(p.detach()))


def attach(policy: nn.Module, keys: list[str], kind: str, psd: bool = False) -> None:
    """Give `policy` the rule `kind` for `keys` (nothing for `sgd`); call before the outer optimiser is built."""
    if kind != "sgd":
        policy.add_module(RULE, InnerRule(policy, keys, kind, psd))


def rule_keys(names) -> list[str]:
    """The names among `names` (parameter names) that belong to a learned rule."""
    return [name for name in names if name.startswith(PREFIX)]


def factor_names(policy: nn.Module, params: dict, key: str) -> list[str]:
    """The names in `params` of the rule's factors for the adapted parameter `key` ([] under `sgd`)."""
    if getattr(policy, RULE, None) is None:
        return []
    names = (f"{PREFIX}{part}.{_safe(key)}" for part in ("left", "right", "scale"))
    return [name for name in names if name in params]


def precondition(policy: nn.Module, params: dict, key: str, grad: torch.Tensor) -> torch.Tensor:
    """P_k(g) for the adapted parameter `key` under the policy's rule, its factors read from `params` (so that
    the result is differentiable in them); `grad` may carry a leading task axis. The identity for `sgd` and for a
    key the rule has no factor for (a layer adapted only at test time)."""
    names = factor_names(policy, params, key)
    if not names:
        return grad
    if len(names) == 1:  # an elementwise factor
        return params[names[0]] * grad
    left, right = params[names[0]], params[names[1]]
    if policy.get_submodule(RULE).psd:
        left, right = left.T @ left, right.T @ right
    return left @ grad @ right


def _sum_tasks(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """x summed over its leading task axis where `like` (a shared factor) has none."""
    return x.sum(0) if x.dim() > like.dim() else x


def precondition_jvp(policy: nn.Module, params: dict, key: str, grad: torch.Tensor, d_grad: torch.Tensor | None,
                     d_factors: dict) -> torch.Tensor:
    """The tangent of P(phi, g) at (phi, `grad`) along (`d_factors`, `d_grad`): P(phi, dg) + dP/dphi[dphi](g), the
    rule's part of the inner step's Jacobian-vector product (metarl.algorithm.inner_jacobian); `d_grad` None is zero."""
    names = factor_names(policy, params, key)
    out = None if d_grad is None else precondition(policy, params, key, d_grad)
    if not names:
        return torch.zeros_like(grad) if out is None else out
    if len(names) == 1:  # an elementwise factor s: s dg + ds g
        part = d_factors[names[0]] * grad
    else:
        left, right = params[names[0]], params[names[1]]
        d_left, d_right = d_factors[names[0]], d_factors[names[1]]
        if policy.get_submodule(RULE).psd:  # d(L^T L) = dL^T L + L^T dL
            d_left, d_right = d_left.T @ left + left.T @ d_left, d_right.T @ right + right.T @ d_right
            left, right = left.T @ left, right.T @ right
        part = d_left @ grad @ right + left @ grad @ d_right
    return part if out is None else out + part


def precondition_vjp(policy: nn.Module, params: dict, key: str, grad: torch.Tensor,
                     cotangent: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The transpose of `precondition_jvp`: (P(phi, .)^T u, {factor name: dP/dphi^T u}) for the cotangent u of P's
    output at (phi, `grad`); the factors' parts are summed over tasks (the factors are shared)."""
    names = factor_names(policy, params, key)
    if not names:
        return cotangent, {}
    if len(names) == 1:
        scale = params[names[0]]
        return scale * cotangent, {names[0]: _sum_tasks(cotangent * grad, scale)}
    left, right = params[names[0]], params[names[1]]
    psd = policy.get_submodule(RULE).psd
    a, b = (left.T @ left, right.T @ right) if psd else (left, right)
    through = a.transpose(-1, -2) @ cotangent @ b.transpose(-1, -2)
    a_bar = _sum_tasks(cotangent @ (grad @ b).transpose(-1, -2), a)  # d<u, A G B>/dA = u (G B)^T
    b_bar = _sum_tasks((a @ grad).transpose(-1, -2) @ cotangent, b)  # d<u, A G B>/dB = (A G)^T u
    if psd:  # A = L^T L: dA/dL^T a_bar = L (a_bar + a_bar^T)
        a_bar, b_bar = left @ (a_bar + a_bar.T), right @ (b_bar + b_bar.T)
    return through, {names[0]: a_bar, names[1]: b_bar}


@torch.no_grad()
def rule_metrics(policy: nn.Module, lr: float) -> dict:
    """What the rule has learned, per adapted parameter: Meta-SGD's step sizes (lr * s: mean, min, max); each KFO
    factor's relative distance from the identity ||F - I||_F / ||I||_F and its condition number (of the factor as
    applied: L^T L with `kfo_psd`), a vector's factor as its distance from 1."""
    rule = getattr(policy, RULE, None)
    if rule is None:
        return {}
    out = {}
    for safe, s in rule.scale.items():
        key = safe.replace("__", ".")
        if rule.kind == "meta-sgd":
            step = lr * s
            out.update({f"meta-sgd/{key}/step_size_mean": float(step.mean()),
                        f"meta-sgd/{key}/step_size_min": float(step.min()),
                        f"meta-sgd/{key}/step_size_max": float(step.max())})
        else:
            out[f"kfo/{key}/scale_distance"] = float((s - 1).norm() / s.numel() ** 0.5)
    for side, factors in (("left", rule.left), ("right", rule.right)):
        for safe, f in factors.items():
            key = safe.replace("__", ".")
            applied = f.T @ f if rule.psd else f
            eye = torch.eye(f.shape[0], dtype=f.dtype, device=f.device)
            out[f"kfo/{key}/{side}_distance"] = float((applied - eye).norm() / eye.norm())
            out[f"kfo/{key}/{side}_condition"] = float(torch.linalg.cond(applied))
    return out


def metric_names(kind: str, keys: list[str], shapes: dict[str, tuple]) -> dict[str, str]:
    """The metric names `rule_metrics` writes for a rule over `keys` (their `shapes`), with their meaning."""
    out = {}
    for key in keys:
        if kind == "meta-sgd":
            for stat in ("mean", "min", "max"):
                out[f"meta-sgd/{key}/step_size_{stat}"] = f"Meta-SGD: the {stat} of {key}'s learned step sizes"
        elif kind == "kfo" and len(shapes[key]) == 2:
            for side in ("left", "right"):
                out[f"kfo/{key}/{side}_distance"] = f"KFO: ||F - I|| / ||I|| of {key}'s {side} factor"
                out[f"kfo/{key}/{side}_condition"] = f"KFO: condition number of {key}'s {side} factor"
        elif kind == "kfo":
            out[f"kfo/{key}/scale_distance"] = f"KFO: RMS distance from 1 of {key}'s elementwise factor"
    return out
