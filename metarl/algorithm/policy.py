"""Gaussian MLP policy used functionally: one module, any number of per-task parameter sets.

Architecture from the MAML paper (Finn et al. 2017, appendix A.2): hidden ReLU layers (2 x 100 by default),
a linear head for the mean, and a state-independent learned log-std. Parameter names split into
`body.*` (hidden layers), `head.*` (the final layer) and `log_std`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal
from torch.func import functional_call, vmap

Params = dict[str, torch.Tensor]


class GaussianMLP(nn.Module):
    """Diagonal Gaussian policy: mean = head(body(obs)), std = exp(log_std)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes=(100, 100), init_log_std: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        layers, width = [], obs_dim
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
        for module in [*self.body, self.head]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.head(self.body(obs))
        return mean, self.log_std.expand_as(mean)


def head_keys(policy: GaussianMLP) -> list[str]:
    """Names of the final layer's parameters: what ANIL adapts."""
    return [name for name, _ in policy.named_parameters() if name.startswith("head.")]


def adapted_keys(policy: GaussianMLP, algo: str) -> list[str]:
    """Parameters the inner loop may change: all of the policy's for MAML (a learned inner rule's factors,
    `inner_rule.*`, are never adapted), the head for ANIL (Raghu et al. 2020)."""
    if algo == "maml":
        return [name for name, _ in policy.named_parameters() if not name.startswith("inner_rule.")]
    if algo == "anil":
        return head_keys(policy)
    raise ValueError(f"unknown algorithm {algo!r}; allowed: 'anil', 'maml'")


def layers(policy: GaussianMLP) -> dict[str, list[str]]:
    """The policy's layers, input to output, with their parameter names: "hidden 1".."hidden n" (the body's Linear
    layers), "head" and "log_std" (what the analysis reports per layer and freezes by layer)."""
    out, hidden = {}, 0
    for index, module in enumerate(policy.body):
        if isinstance(module, nn.Linear):
            hidden += 1
            out[f"hidden {hidden}"] = [f"body.{index}.weight", f"body.{index}.bias"]
    out["head"] = head_keys(policy)
    out["log_std"] = ["log_std"]
    return out


def layer_outputs(policy: GaussianMLP, params: Params, obs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each hidden layer's activations (after its ReLU) and the head's output (the policy mean) for `obs` of shape
    (n, obs_dim) under one parameter set (no task axis): the representations the analysis compares."""
    out, x, hidden = {}, obs, 0
    for index, module in enumerate(policy.body):
        if isinstance(module, nn.Linear):
            x = torch.nn.functional.linear(x, params[f"body.{index}.weight"], params[f"body.{index}.bias"])
        else:
            x = module(x)
            hidden += 1
            out[f"hidden {hidden}"] = x
    out["head"] = torch.nn.functional.linear(x, params["head.weight"], params["head.bias"])
    return out


def meta_params(policy: GaussianMLP) -> Params:
    """The policy's own parameters as a name -> tensor dict (the meta-parameters)."""
    return dict(policy.named_parameters())


def is_per_task(policy: GaussianMLP, params: Params) -> dict[str, int | None]:
    """vmap in_dims for `params`: 0 for tensors with a leading task axis, None for shared ones."""
    ndim = {name: p.dim() for name, p in policy.named_parameters()}
    return {name: (0 if value.dim() > ndim[name] else None) for name, value in params.items()}


def forward(policy: GaussianMLP, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-std for `obs` of shape (K, ..., obs_dim) under `params`.

    Shared parameters (no task axis) serve all K tasks in one call; parameters with a leading task axis K
    (the adapted ones) are mapped over with vmap, so a batch of K adapted policies is one call. For ANIL the
    body stays shared: its layers run once over all tasks and only the heads differ.
    """
    in_dims = is_per_task(policy, params)
    if all(d is None for d in in_dims.values()):
        return functional_call(policy, params, (obs,))
    return vmap(lambda p, o: functional_call(policy, p, (o,)), in_dims=(in_dims, 0))(params, obs)


def distribution(mean: torch.Tensor, log_std: torch.Tensor) -> Normal:
    """The diagonal Gaussian over actions; sum `log_prob`/`kl_divergence` over the last axis."""
    return Normal(mean, torch.exp(log_std), validate_args=False)


def log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-density of `actions`, summed over the action axis."""
    return distribution(mean, log_std).log_prob(actions).sum(-1)


def kl_divergence(mean_p, log_std_p, mean_q, log_std_q) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the action axis."""
    return torch.distributions.kl_divergence(distribution(mean_p, log_std_p), distribution(mean_q, log_std_q)).sum(-1)


def sample_actions(mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None,
                   rows: tuple[slice, int] | None = None) -> torch.Tensor:
    """Draw actions from the Gaussian with an explicit generator (no global RNG). With `rows` = (tasks, total),
    `mean` holds the tasks `tasks` of `total`: the noise of all of them is drawn and these rows kept, so the actions
    do not depend on how tasks are split over ranks (metarl.distributed)."""
    # the noise is drawn on the generator's device (the CPU's), then moved to the mean's: every device acts alike
    if rows is None:
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    else:
        noise = torch.randn((rows[1], *mean.shape[1:]), generator=generator, dtype=mean.dtype)[rows[0]]
    return mean + torch.exp(log_std) * noise.to(mean.device)
