"""The Hessian of TRPO's mean KL in the Gaussian MLP policy's parameters, as a closed-form Gauss-Newton product.

Where the new policy equals the one that sampled the episodes (where TRPO takes its Fisher), the Hessian of the
mean KL(pi_old || pi) in the parameters is exactly J^T M J, J the Jacobian of the policy's outputs (the mean of
every sample, log sigma) in the parameters and M the KL's Hessian in those outputs: w / sigma^2 per sample and
action dimension for the mean, 2 w for log sigma, no cross terms (w the sample's weight in the mean KL). The term
with the KL's gradient in the outputs vanishes there (the Fisher of an exponential family equals its Gauss-Newton
matrix: Martens, "New Insights and Perspectives on the Natural Gradient Method", JMLR 2020, sec. 9.2). So a
product H u is one forward-mode pass through the MLP (the tangent of its outputs), a scaling, and one backward
pass (Pearlmutter 1994; Schraudolph 2002), with the ReLU masks and layer inputs kept from one forward pass: no
double backward through the KL.
"""

from __future__ import annotations

import torch
from torch import nn

from metarl.algorithm.policy import GaussianMLP, Params, log_prob


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x W^T + b for x (K, S, in) and a shared (out, in) or per-task (K, out, in) weight; the bias is added by the
    product itself (addmm, baddbmm) where its shape allows, saving a pass over the output."""
    if bias is None:
        return x @ weight.transpose(-1, -2)
    if weight.dim() == 3:
        return torch.baddbmm(bias if bias.dim() == 1 else bias.unsqueeze(1), x, weight.transpose(1, 2))
    if bias.dim() == 1:
        return torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight.T).reshape(*x.shape[:-1], weight.shape[0])
    return x @ weight.T + bias.unsqueeze(1)


def _add_product(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out += a @ b in place (out a fresh contiguous (K, S, n) result, a (K, S, m), b shared (m, n) or per task
    (K, m, n)): one pass fewer over `out` than a separate product and sum. Out of place under autocast (the
    product's dtype may differ from `out`'s)."""
    if not _in_place(out, a, b):
        return out + a @ b
    if b.dim() == 3:
        return out.baddbmm_(a, b)
    out.view(-1, out.shape[-1]).addmm_(a.reshape(-1, a.shape[-1]), b)
    return out


def _weight_grad(delta: torch.Tensor, x: torch.Tensor, per_task: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """sum over samples of delta x^T: (K, out, in) per task, (out, in) summed over tasks for a shared weight; added
    into `out` in place when given."""
    if out is not None and not _in_place(out, delta, x):
        return out + _weight_grad(delta, x, per_task)
    if per_task:
        return delta.transpose(1, 2) @ x if out is None else out.baddbmm_(delta.transpose(1, 2), x)
    delta, x = delta.reshape(-1, delta.shape[-1]), x.reshape(-1, x.shape[-1])
    return delta.T @ x if out is None else out.addmm_(delta.T, x)


def _in_place(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether out += a @ b can run in place: one dtype throughout and no autocast."""
    return out.dtype == a.dtype == b.dtype and not torch.is_autocast_enabled(out.device.type)


class GaussianKLCurvature:
    """u -> H u for the mean KL of `policy` under `params` on observations `obs` (K, ..., obs_dim), each sample
    weighted by `weight` (K, ...) in the mean; `params` may hold per-task (adapted) tensors with a leading K axis.
    Names outside the policy's own layers (a learned inner rule's factors) get no curvature (None)."""

    def __init__(self, policy: GaussianMLP, params: Params, obs: torch.Tensor, weight: torch.Tensor):
        self.policy, self.params = policy, {k: v.detach() for k, v in params.items()}
        self.ndim = {name: p.dim() for name, p in policy.named_parameters()}
        num_tasks = obs.shape[0]
        self.weight = weight.reshape(num_tasks, -1, 1)  # (K, S, 1)
        self.linears = [f"body.{i}" for i, m in enumerate(policy.body) if isinstance(m, nn.Linear)] + ["head"]
        # inputs of each linear layer, and the ReLU masks of the hidden ones, at `params` (no graph)
        self.inputs, self.masks = [], []
        with torch.no_grad():
            x = obs.reshape(num_tasks, -1, obs.shape[-1])
            for name in self.linears:
                self.inputs.append(x)
                if name == "head":
                    break
                z = _linear(x, self.params[f"{name}.weight"], self.params[f"{name}.bias"])
                mask = (z > 0).to(z.dtype)
                self.masks.append(mask)
                x = z * mask
            log_std = self.params["log_std"]
            # M for the mean: w / sigma^2 per action dimension, sigma per task where log_std is adapted
            inv_var = torch.exp(-2 * (log_std if log_std.dim() == 1 else log_std.unsqueeze(1)))
            self.mean_metric = self.weight * inv_var  # (K, S, act_dim)
            # M for log sigma: 2 w summed over a task's samples (log sigma is the same for all of them)
            self.log_std_metric = 2 * self.weight.sum(1)  # (K, 1)

    def per_task(self, name: str) -> bool:
        return self.params[name].dim() > self.ndim[name]

    def __call__(self, u: Params) -> Params:
        """H u, with u a tangent per parameter name (shaped as `params`)."""
        p = self.params
        # forward mode: the tangent of each layer's output
        tangent = None
        for i, name in enumerate(self.linears):
            w, b = f"{name}.weight", f"{name}.bias"
            dz = _linear(self.inputs[i], u[w], u[b])
            if tangent is not None:
                dz = _add_product(dz, tangent, p[w].transpose(-1, -2))
            if name == "head":
                break
            tangent = dz.mul_(self.masks[i])
        # M J u for the mean, pulled back (J^T) with M's log-sigma part
        return self._pullback(dz * self.mean_metric, self.log_std_metric * u["log_std"])

    def _pullback(self, delta: torch.Tensor, log_std: torch.Tensor) -> Params:
        """J^T of an error `delta` (K, S, act_dim) at the mean and `log_std` (K, act_dim) per task at log sigma:
        the backward pass, layer by layer, from the cached inputs and masks."""
        p, out = self.params, {}
        for i in reversed(range(len(self.linears))):
            name = self.linears[i]
            w, b = f"{name}.weight", f"{name}.bias"
            out[w] = _weight_grad(delta, self.inputs[i], self.per_task(w))
            out[b] = delta.sum(1) if self.per_task(b) else delta.sum((0, 1))
            if i:
                delta = (delta @ p[w]).mul_(self.masks[i - 1])
        out["log_std"] = log_std if self.per_task("log_std") else log_std.sum(0)
        return {k: out.get(k) for k in p}

    def surrogate_gradient(self, actions: torch.Tensor, old_log_prob: torch.Tensor,
                           advantages: torch.Tensor) -> tuple[torch.Tensor, Params]:
        """TRPO's surrogate -sum_s w_s A_s pi(a_s|s_s) / pi_old(a_s|s_s) with the mean KL's sample weights w, and
        its gradient in the parameters, from this object's forward pass (one forward over the post-adaptation batch
        serves the gradient and every Fisher product). actions (K, ..., act_dim); old_log_prob, advantages (K, ...).
        Names outside the policy's layers get no gradient (None)."""
        num_tasks = self.weight.shape[0]
        p = self.params
        with torch.no_grad():
            mean = _linear(self.inputs[-1], p["head.weight"], p["head.bias"])
            log_std = p["log_std"] if p["log_std"].dim() == 1 else p["log_std"].unsqueeze(1)
            actions = actions.reshape(num_tasks, -1, actions.shape[-1])
            scaled = (actions - mean) * torch.exp(-log_std)
            ratio = torch.exp(log_prob(mean, log_std, actions) - old_log_prob.reshape(num_tasks, -1)).unsqueeze(-1)
            coef = -self.weight * advantages.reshape(num_tasks, -1, 1) * ratio  # d loss / d log pi, per sample
            loss = coef.sum()
            # d log pi / d mean = (a - mu) / sigma^2; d log pi / d log sigma = (a - mu)^2 / sigma^2 - 1
            grads = self._pullback(coef * scaled * torch.exp(-log_std), (coef * (scaled ** 2 - 1)).sum(1))
        return loss, grads
