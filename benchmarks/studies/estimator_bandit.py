"""What each inner-loop estimator's meta-gradient estimates, on a problem solved in closed form.

A one-step Gaussian bandit: a ~ N(theta, sigma^2), reward -(a - g)^2, advantages = rewards, so
J(theta) = -((theta - g)^2 + sigma^2), grad J = -2 (theta - g), grad^2 J = -2. One inner step theta' = theta +
alpha ghat (ghat: the inner policy gradient on n samples). The exact meta-gradient of J(theta + alpha grad J(theta))
is (1 + alpha grad^2 J) grad J(theta'). An estimator whose inner gradient has derivative hhat has the mean
meta-gradient

    E[(1 + alpha hhat) grad J(theta + alpha ghat)] = -2 [(1 + alpha E hhat)(d + alpha E ghat) + alpha^2 Cov / n],

d = theta - g, Cov = Cov(h_i, g_i) per sample (the O(1/n) price of adapting on samples). Per sample, x = a - theta:
g_i = x r / sigma^2; h_i = -r / sigma^2 for reinforce (Williams 1992: E[grad^2 log pi A] only); h_i = (x^2 / sigma^4
- 1 / sigma^2) r for lvc (Rothfuss et al. 2019) and dice (Foerster et al. 2018), the same on one step: they add
reinforce's missing E[grad log pi grad log pi^T A]. The moments are exact (Gauss-Hermite quadrature of polynomials).

The measurement runs metarl's own meta-gradient (`metarl.algorithm.metalearner.meta_gradient`, through the inner step, post
batch sampled at each adapted theta') over many independent tasks (the Monte Carlo replicates), in groups for the
standard error. Writes benchmarks/results/studies/estimator_bandit.{json,md}.

    python benchmarks/studies/estimator_bandit.py          # 4000 tasks x 100 inner / 100 post samples, seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metarl.algorithm.estimators import ESTIMATORS
from metarl.algorithm.metalearner import Batch, MetaBatch, adapted_values, meta_gradient, task_slice
from metarl.algorithm.policy import GaussianMLP, forward, log_prob
from metarl.common.files import write_report
from metarl.sampling.sampler import Episodes

REPO = Path(__file__).resolve().parents[2]
THETA, GOAL, SIGMA, ALPHA = 0.3, -0.7, 1.0, 0.1


def closed_form(estimator: str, n: int) -> dict:
    """The estimator's exact mean inner gradient, inner-gradient derivative and meta-gradient, and the exact
    meta-gradient, for n inner samples."""
    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    x = SIGMA * x
    r = -(x + THETA - GOAL) ** 2
    g = x * r / SIGMA**2
    h = -r / SIGMA**2 if estimator == "reinforce" else (x**2 / SIGMA**4 - 1 / SIGMA**2) * r
    e = lambda f: float((w * f).sum())  # noqa: E731
    d = THETA - GOAL
    cov_term = -2 * ALPHA**2 * (e(h * g) - e(h) * e(g)) / n
    return {"grad": e(g), "hess": e(h), "mean_meta_gradient": -2 * (1 + ALPHA * e(h)) * (d + ALPHA * e(g)) + cov_term,
            "cov_term": cov_term, "exact_meta_gradient": (1 - 2 * ALPHA) * -2 * (d - 2 * ALPHA * d),
            "exact_hess": -2.0}


def bandit_meta(num_tasks: int, n: int, m: int, estimator: str, seed: int):
    """`num_tasks` independent copies of the bandit as a meta-batch: inner batch at theta, post batch at each
    task's adapted theta'."""
    gen = torch.Generator().manual_seed(seed)
    policy = GaussianMLP(1, 1, hidden_sizes=()).double()
    with torch.no_grad():
        policy.head.bias.fill_(THETA)
        policy.log_std.fill_(float(np.log(SIGMA)))
    keys = ["head.bias"]
    params = {k: v.detach().requires_grad_(True) for k, v in policy.named_parameters()}

    def batch(mean: torch.Tensor, size: int) -> Batch:  # mean: (K,)
        actions = mean[:, None, None, None] + SIGMA * torch.randn(num_tasks, 1, size, 1, generator=gen,
                                                                  dtype=torch.float64)
        rewards = -(actions[..., 0] - GOAL) ** 2
        return Batch(Episodes(torch.zeros_like(actions), actions, rewards, torch.ones_like(rewards)), rewards)

    inner = batch(torch.full((num_tasks,), THETA, dtype=torch.float64), n)
    adapted = adapted_values(policy, params, [inner], keys, [ALPHA], estimator)
    post = batch(adapted["head.bias"].reshape(num_tasks), m)
    with torch.no_grad():
        mean, log_std = forward(policy, adapted, post.episodes.observations)
        old = log_prob(mean, log_std, post.episodes.actions)
    return policy, params, keys, MetaBatch([inner], post, mean, log_std, old)


def measure(estimator: str, tasks: int = 4000, n: int = 100, m: int = 100, groups: int = 40, seed: int = 7) -> dict:
    """Mean and standard error of J's meta-gradient in theta over `tasks` replicates, with the closed form."""
    policy, params, keys, meta = bandit_meta(tasks, n, m, estimator, seed)
    size = tasks // groups
    offset = int(np.cumsum([0] + [p.numel() for p in params.values()])[list(params).index("head.bias")])
    per_group = [-float(meta_gradient(policy, params, task_slice(meta, slice(s, s + size)), keys, [ALPHA],
                                      first_order=False, task_chunk=size, estimator=estimator)[offset])
                 for s in range(0, tasks, size)]  # the loss is -J: minus its gradient is J's
    return {"estimator": estimator, "mean": float(np.mean(per_group)),
            "sem": float(np.std(per_group, ddof=1) / np.sqrt(groups)), "tasks": tasks, "n": n, "m": m,
            **closed_form(estimator, n)}


def markdown(rows: list[dict], command: str, date: str) -> str:
    r0 = rows[0]
    lines = ["| estimator | measured meta-gradient (± s.e.) | its closed form | exact meta-gradient | "
             "inner-gradient derivative: estimator's mean / exact |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['estimator']} | {r['mean']:.4f} ± {r['sem']:.4f} | {r['mean_meta_gradient']:.4f} | "
                     f"{r['exact_meta_gradient']:.4f} | {r['hess']:.3f} / {r['exact_hess']:.3f} |")
    lines += ["", f"Gaussian bandit theta = {THETA}, goal {GOAL}, sigma {SIGMA}, inner step {ALPHA}; {r0['tasks']} "
              f"replicate tasks x {r0['n']} inner and {r0['m']} post-adaptation samples. The closed form includes "
              "the O(1/n) covariance of adapting on samples. Command: `" + command + f"`, {date}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "estimator_bandit")
    args = parser.parse_args(argv)
    if args.tasks < 80 or args.tasks % 40:
        parser.error(f"--tasks must be a multiple of 40 and >= 80 (40 groups for the standard error), got {args.tasks}")
    torch.set_num_threads(1)
    rows = [measure(e, tasks=args.tasks) for e in ESTIMATORS]
    command = " ".join(["python", "benchmarks/studies/estimator_bandit.py", *(sys.argv[1:] if argv is None else argv)])
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = markdown(rows, command, date)
    write_report(args.out, {"command": command, "date": date, "rows": rows}, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
