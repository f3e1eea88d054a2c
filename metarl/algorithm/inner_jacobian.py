"""Closed-form products with the Jacobian J = d theta' / d theta of the inner loop, for TRPO's Fisher J^T H J.

One SGD inner step theta' = theta - lr * M grad L(theta) (M keeps the adapted keys) has J = I - lr * M Hess L,
and Hess L is symmetric, so J v = v - lr * M (Hess L v) and J^T u = u - lr * Hess L (M u): both are one
Hessian-vector product of the inner loss. For the Gaussian MLP policy that product is Pearlmutter's R-operator
(Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Computation 1994): a forward pass of tangents
through the layers and one backward pass of the tangents of the back-propagated errors, with the layer inputs, ReLU
masks and errors at the step's point computed once per meta-batch chunk and reused by every conjugate-gradient
product. Autograd would instead go back through a graph that itself holds a backward pass (a double backward),
twice per product. Several inner steps chain: J = J_S ... J_1, each at its own point.

Estimators (metarl.algorithm.estimators): `reinforce`'s inner loss -E[log pi A] has Hessian -E[A Hess log pi]; `lvc`'s
-E[pi / pi_ref A] has -E[rho A (Hess log pi + grad log pi grad log pi^T)], rho = pi / pi_ref (1 at the sampling
policy; ProMP, Rothfuss et al. ICLR 2019, sec. 5). `dice` uses autograd (`supported`).

Learned inner rules (metarl.algorithm.inner_optimizers) make the step theta' = theta - lr * P(phi, g(theta)), P linear in the
gradient g and differentiable in the rule's factors phi (meta-parameters, unchanged by the step). Then
J v = v - lr * (P(phi, Hess L v) + dP/dphi[v_phi](g)) and J^T u = u - lr * Hess L (dP/dg^T u) on theta and
u - lr * dP/dphi^T u on phi: the same Hessian-vector product, and P's own small products (its factors are at most
n x n; metarl.algorithm.inner_optimizers.precondition_jvp and precondition_vjp).
"""

from __future__ import annotations

import torch
from torch import nn

from metarl.algorithm.fisher import _add_product, _linear, _weight_grad
from metarl.algorithm.inner_optimizers import RULE, factor_names, precondition, precondition_jvp, precondition_vjp
from metarl.algorithm.policy import GaussianMLP, Params, log_prob

ESTIMATORS = ("reinforce", "lvc")


def supported(policy: GaussianMLP, estimator: str) -> bool:
    """Whether the closed form covers this inner loop: a reinforce or lvc inner loss, with any update rule."""
    return estimator in ESTIMATORS


def cast(obj, dtype: torch.dtype):
    """A shallow copy of `obj` with its floating-point tensors (also in its lists and dicts) in `dtype`: the cached
    state of a product (metarl.algorithm.fisher.GaussianKLCurvature, InnerStep) converted once, not at every product."""
    def convert(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.to(dtype)
        if isinstance(x, list):
            return [convert(y) for y in x]
        if isinstance(x, dict):
            return {k: convert(y) for k, y in x.items()}
        return x

    copy = object.__new__(type(obj))
    copy.__dict__.update({k: convert(v) for k, v in vars(obj).items()})
    return copy


class InnerStep:
    """One inner step (SGD, or the policy's learned rule) at the point `params` (adapted keys per task after the
    first step) on `batch`: the products J v and J^T u, without autograd's double backward."""

    def __init__(self, policy: GaussianMLP, params: Params, batch, keys: list[str], lr: float, estimator: str,
                 first_order: bool):
        self.keys, self.lr, self.first_order = list(keys), lr, first_order
        self.ndim = {name: p.dim() for name, p in policy.named_parameters()}
        self.params = {k: v.detach() for k, v in params.items()}
        self.linears = [f"body.{i}" for i, m in enumerate(policy.body) if isinstance(m, nn.Linear)] + ["head"]
        self.layer_of = {f"{name}.{part}": i for i, name in enumerate(self.linears) for part in ("weight", "bias")}
        ep = batch.episodes
        num_tasks = ep.observations.shape[0]
        p = self.params
        with torch.no_grad():
            x = ep.observations.reshape(num_tasks, -1, ep.observations.shape[-1])
            self.inputs, self.masks = [], []
            for name in self.linears:
                self.inputs.append(x)
                z = _linear(x, p[f"{name}.weight"], p[f"{name}.bias"])
                if name == "head":
                    break
                mask = (z > 0).to(z.dtype)
                self.masks.append(mask)
                x = z * mask
            log_std = p["log_std"] if p["log_std"].dim() == 1 else p["log_std"].unsqueeze(1)  # (A) or (K, 1, A)
            residual = ep.actions.reshape(num_tasks, -1, ep.actions.shape[-1]) - z
            self.inv_var = torch.exp(-2 * log_std)
            self.residual = residual
            self.d_mean = residual * self.inv_var  # d log pi / d mean
            self.d_log_std = residual ** 2 * self.inv_var - 1  # d log pi / d log sigma
            mask = ep.mask.reshape(num_tasks, -1)
            coef = -mask * batch.advantages.reshape(num_tasks, -1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            self.outer = estimator == "lvc"
            if self.outer and batch.behaviour_log_prob is not None:  # rho = pi / pi_ref
                log_pi = log_prob(z, log_std, ep.actions.reshape(num_tasks, -1, ep.actions.shape[-1]))
                coef = coef * torch.exp(log_pi - batch.behaviour_log_prob.reshape(num_tasks, -1))
            self.coef = coef.unsqueeze(-1)  # (K, S, 1): the inner loss is sum_t coef_t w_t
            # the back-propagated errors at the point, output layer first
            delta = self.coef * self.d_mean
            self.deltas = [delta]
            for i in reversed(range(1, len(self.linears))):
                delta = (delta @ p[f"{self.linears[i]}.weight"]) * self.masks[i - 1]
                self.deltas.insert(0, delta)
            # a learned rule: its factors per adapted key (P transforms the inner gradient per task, `grads`)
            self.policy = policy if getattr(policy, RULE, None) is not None else None
            self.factors = {k: factor_names(policy, p, k) for k in self.keys}
            self._grads = None

    @property
    def grads(self) -> Params:
        """The inner loss's gradient per task on the adapted keys at the point, from the cached errors (the weight
        gradients are the only products left)."""
        if self._grads is None:
            with torch.no_grad():
                self._grads = self._backward(self.deltas, [None] * len(self.linears),
                                             (self.coef * self.d_log_std).sum(1), {k: True for k in self.keys})
        return self._grads

    def adapted(self, policy: GaussianMLP) -> Params:
        """The step's result theta - lr * P(g) (adapted keys per task): `metalearner.adapted_values`' values, to
        round-off, from the same forward pass that serves the products."""
        num_tasks = self.coef.shape[0]
        with torch.no_grad():
            return {**self.params, **{k: self._per_task(k, self.params[k], num_tasks)
                                      - self.lr * precondition(policy, self.params, k, self.grads[k])
                                      for k in self.keys}}

    def _per_task(self, name: str, value: torch.Tensor, num_tasks: int) -> torch.Tensor:
        return value if value.dim() > self.ndim[name] else value.expand(num_tasks, *value.shape)

    def _backward(self, deltas, tangents, log_std_grad, outputs: dict[str, bool]) -> Params:
        """Gradients for the names in `outputs` (value: per task, else summed over tasks) from the errors `deltas`
        of each layer: sum_t delta_l x_l^T, plus the point's errors times the tangents `tangents` of the layer
        inputs where given (the R-operator's weight term)."""
        out = {}
        for name, per_task in outputs.items():
            if name == "log_std":
                out[name] = log_std_grad if per_task else log_std_grad.sum(0)
                continue
            i = self.layer_of[name]
            if name.endswith(".bias"):
                out[name] = deltas[i].sum(1) if per_task else deltas[i].sum((0, 1))
                continue
            grad = _weight_grad(deltas[i], self.inputs[i], per_task)
            if tangents[i] is not None:
                grad = _weight_grad(self.deltas[i], tangents[i], per_task, out=grad)
            out[name] = grad
        return out

    def hvp(self, u: Params, outputs: dict[str, bool]) -> Params:
        """Hess L u for the tangent `u` (a name -> tensor dict; missing names are zero), for the names in `outputs`
        (value: per task, else summed over tasks): Pearlmutter's R-operator through the MLP."""
        p, n = self.params, len(self.linears)
        # forward: tangents of each layer's input (t[i]) and of the mean
        tangents, t, d_mean = [None] * n, None, None
        for i, name in enumerate(self.linears):
            tangents[i] = t
            w, b = f"{name}.weight", f"{name}.bias"
            fresh = True  # dz a new tensor of its own, masked in place
            if w in u:
                dz = _linear(self.inputs[i], u[w], u.get(b))
                if t is not None:
                    dz = _add_product(dz, t, p[w].transpose(-1, -2))
            elif t is not None:
                dz = _linear(t, p[w], u.get(b))
            elif b in u:
                dz, fresh = _bias(u[b], self.inputs[i]), False  # a broadcast view
            else:
                dz = None
            if i == n - 1:
                d_mean = dz
            elif dz is None:
                t = None
            else:
                t = dz.mul_(self.masks[i]) if fresh else dz * self.masks[i]
        d_log_std = u.get("log_std")
        if d_log_std is not None and d_log_std.dim() == 2:
            d_log_std = d_log_std.unsqueeze(1)
        # tangent of the errors at the mean and of log sigma's gradient (the per-sample Hessian of log pi)
        r_delta = torch.zeros_like(self.d_mean) if d_mean is None else -self.inv_var * d_mean
        r_log_std = torch.zeros_like(self.d_mean)
        if d_mean is not None:
            r_log_std = r_log_std - 2 * self.d_mean * d_mean
        if d_log_std is not None:
            r_delta = r_delta - 2 * self.d_mean * d_log_std
            r_log_std = r_log_std - 2 * self.residual * self.d_mean * d_log_std
        if self.outer:  # lvc: + (grad log pi . u) grad log pi
            dot = torch.zeros_like(self.coef)
            if d_mean is not None:
                dot = dot + (self.d_mean * d_mean).sum(-1, keepdim=True)
            if d_log_std is not None:
                dot = dot + (self.d_log_std * d_log_std).sum(-1, keepdim=True)
            r_delta = r_delta + dot * self.d_mean
            r_log_std = r_log_std + dot * self.d_log_std
        r_delta = self.coef * r_delta
        r_log_std = (self.coef * r_log_std).sum(1)
        # backward of the errors' tangents, down to the lowest layer asked for
        lowest = min((self.layer_of[k] for k in outputs if k != "log_std"), default=n - 1)
        r_deltas = [None] * n
        r_deltas[n - 1] = r_delta
        for i in reversed(range(lowest + 1, n)):
            w = f"{self.linears[i]}.weight"
            back = r_deltas[i] @ p[w]
            if w in u:
                back = _add_product(back, self.deltas[i], u[w])
            r_deltas[i - 1] = back.mul_(self.masks[i - 1])
        return self._backward(r_deltas, tangents, r_log_std, outputs)

    def jvp(self, v: Params) -> Params:
        """J v: v on the non-adapted names; v - lr * (P(Hess L v) + dP/dphi[v_phi](g)) per task on the adapted
        ones (P the identity for SGD)."""
        num_tasks = self.coef.shape[0]
        out = dict(v)
        hv = {} if self.first_order else self.hvp(v, {k: True for k in self.keys})
        for k in self.keys:
            step = hv.get(k)
            if self.policy is not None:  # the rule's product, and its own derivative in its factors
                step = precondition_jvp(self.policy, self.params, k, self.grads[k], step,
                                        {n: v[n] for n in self.factors[k]})
            out[k] = self._per_task(k, v[k], num_tasks) - (self.lr * step if step is not None else 0)
        return out

    def vjp(self, u: Params) -> Params:
        """J^T u, shaped as the point's parameters (a shared one gets the sum over tasks)."""
        u = {k: torch.zeros_like(self.params[k]) if u.get(k) is None else u[k] for k in self.params}
        per_task = {k: self.params[k].dim() > self.ndim[k] for k in self.params}
        out = {k: (u[k] if per_task[k] else u[k].sum(0)) if k in self.keys else u[k] for k in self.params}
        through = {k: u[k] for k in self.keys}  # what the Hessian-vector product carries back: dP/dg^T u
        if self.policy is not None:
            for k in self.keys:
                through[k], factors_bar = precondition_vjp(self.policy, self.params, k, self.grads[k], u[k])
                for name, bar in factors_bar.items():
                    out[name] = out[name] - self.lr * bar
        if not self.first_order:
            layers = {k: t for k, t in per_task.items() if k in self.layer_of or k == "log_std"}
            hu = self.hvp(through, layers)
            out = {k: out[k] - self.lr * hu[k] if k in hu else out[k] for k in out}
        return out


def _bias(db: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A bias tangent broadcast to the layer's output samples (K, S, out)."""
    return (db if db.dim() == 1 else db.unsqueeze(1)).expand(x.shape[0], x.shape[1], db.shape[-1])


class InnerChain:
    """The products J v and J^T u of the whole inner loop, J = J_S ... J_1, step i taken at `points[i]` (the
    meta-parameters, then each step's result: metalearner.adapted_values) on `batches[i]` with `lrs[i]`."""

    def __init__(self, policy: GaussianMLP, points: list[Params], batches: list, keys: list[str],
                 lrs: list[float], estimator: str, first_order: bool):
        self.steps = [InnerStep(policy, point, batch, keys, lr, estimator, first_order)
                      for point, batch, lr in zip(points, batches, lrs)]

    @classmethod
    def through(cls, policy: GaussianMLP, params: Params, batches: list, keys: list[str], lrs: list[float],
                estimator: str, first_order: bool) -> tuple["InnerChain", Params]:
        """The chain of the inner loop from `params`, and its result theta', in one pass: each step's point is the
        previous step's `adapted` (no separate autograd adaptation)."""
        chain, point = object.__new__(cls), {k: v.detach() for k, v in params.items()}
        chain.steps = []
        for batch, lr in zip(batches, lrs):
            chain.steps.append(InnerStep(policy, point, batch, keys, lr, estimator, first_order))
            point = chain.steps[-1].adapted(policy)
        return chain, point

    def to(self, dtype: torch.dtype) -> "InnerChain":
        """The same chain with its cached state in `dtype` (products then run in it)."""
        copy = object.__new__(InnerChain)
        copy.steps = [cast(step, dtype) for step in self.steps]
        return copy

    def jvp(self, v: Params) -> Params:
        for step in self.steps:
            v = step.jvp(v)
        return v

    def vjp(self, u: Params) -> Params:
        for step in reversed(self.steps):
            u = step.vjp(u)
        return u
