"""TRPO building blocks (Schulman et al. 2015): conjugate gradient, flat parameter views,
and a KL-constrained backtracking line search over name -> tensor parameter dicts."""

import math
from collections.abc import Callable

import torch
from torch import Tensor


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10,
    return_product: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Approximately solve A x = b for SPD A given only v -> A v (TRPO appendix C).

    Stops early once the squared residual norm is below residual_tol; b is not modified. With `return_product`
    also returns A x, accumulated from the iterations' own products (x is a combination of the search directions),
    so TRPO's step size needs no extra product.
    """
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rdotr = torch.dot(r, r)
    for _ in range(iters):
        if rdotr < residual_tol:
            break
        Ap = matvec(p)
        alpha = rdotr / torch.dot(p, Ap)
        x = x + alpha * p
        ax = ax + alpha * Ap
        r = r - alpha * Ap
        new_rdotr = torch.dot(r, r)
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
    return (x, ax) if return_product else x


def flat_params(params: dict[str, Tensor]) -> Tensor:
    """Concatenate a name -> tensor dict into one 1-D tensor, in insertion order."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten_like(flat: Tensor, params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Split a 1-D tensor into a dict with the names and shapes of params (inverse of flat_params)."""
    sizes = [p.numel() for p in params.values()]
    if flat.numel() != sum(sizes):
        raise ValueError(f"flat has {flat.numel()} elements, params need {sum(sizes)}")
    chunks = torch.split(flat, sizes)
    return {name: c.view_as(p) for (name, p), c in zip(params.items(), chunks)}


def backtracking_line_search(
    params: dict[str, Tensor],
    step: dict[str, Tensor],
    evaluate: Callable[[dict[str, Tensor]], tuple[float, float]],
    max_kl: float,
    max_steps: int = 15,
    backtrack_ratio: float = 0.8,
    start: tuple[float, float] | None = None,
) -> tuple[dict[str, Tensor], dict]:
    """Try params + ratio**k * step for k = 0.. and accept the first that lowers the loss within max_kl.

    evaluate(candidate) -> (loss, kl), loss to be minimised. `start`: (loss, kl) at `params` when the caller has
    them already (TRPO: the surrogate from the gradient's pass, KL 0), saving one evaluation. When nothing is
    accepted the original tensors are returned unchanged. Inputs are never modified in place.
    """
    loss_before, kl_before = (float(v) for v in (evaluate(params) if start is None else start))
    for k in range(max_steps):
        fraction = backtrack_ratio**k
        # Candidates are fresh leaves keeping each input's requires_grad, and evaluate runs in the
        # caller's grad mode: a MAML evaluate differentiates its inner adaptation step w.r.t. them.
        candidate = {
            name: (p.detach() + fraction * step[name].detach()).requires_grad_(p.requires_grad)
            for name, p in params.items()
        }
        loss, kl = (float(v) for v in evaluate(candidate))
        if math.isfinite(loss) and math.isfinite(kl) and loss < loss_before and kl <= max_kl:
            info = {
                "accepted": True,
                "steps": k + 1,
                "step_fraction": fraction,
                "loss_before": loss_before,
                "loss_after": loss,
                "kl": kl,
            }
            return candidate, info
    info = {
        "accepted": False,
        "steps": max_steps,
        "step_fraction": 0.0,
        "loss_before": loss_before,
        "loss_after": loss_before,
        "kl": kl_before,
    }
    return dict(params), info
