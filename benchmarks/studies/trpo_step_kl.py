"""How well TRPO's quadratic model predicts the KL of its own step, along the step, from a run's checkpoint.

TRPO scales its search direction s so that the quadratic model 0.5 s^T F s equals max_kl; at a fraction f of the
step the model predicts f^2 max_kl. For each run this samples one meta-batch from the checkpoint (one ordinary
meta-iteration, its tasks and noise drawn from --seed), computes the step exactly as training does, and evaluates
the true post-adaptation KL and the surrogate's change at each --fractions f before the line search runs. The
ratio KL / (f^2 max_kl) is 1 where the model is right; one that grows as f shrinks means the KL has a first-order
part, which a smooth function with a minimum at f = 0 cannot have: a sign that the adapted parameters are not
smooth in the meta-parameters (ReLU's kinks inside MAML's inner gradient). --activation softplus or tanh puts a
smooth activation in place of each ReLU of the loaded policy, same weights, as a check of that reading: it is
another function than the one trained, so only its ratios mean something, not its returns. Writes OUT.{json,md}.

    python benchmarks/studies/trpo_step_kl.py --runs benchmarks/results/grid/runs/cheetah-dir-maml-seed0 \\
        benchmarks/results/grid/runs/cheetah-dir-anil-seed0 --out benchmarks/results/studies/trpo_step_kl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from metarl.algorithm.optim import backtracking_line_search
from metarl.common.files import write_report
from metarl.runs import load_trainer

REPO = Path(__file__).resolve().parents[2]
SMOOTH = {"softplus": torch.nn.Softplus, "tanh": torch.nn.Tanh}


def smooth_body(policy: torch.nn.Module, activation: str) -> None:
    """Replace each ReLU of the policy's body by `activation` (a key of SMOOTH), keeping every weight."""
    for i, layer in enumerate(policy.body):
        if isinstance(layer, torch.nn.ReLU):
            policy.body[i] = SMOOTH[activation]()


def probed_line_search(fractions: list[float], record: dict, real=backtracking_line_search):
    """A line search that first evaluates the loss and KL at each fraction of its step, into `record`, then runs
    `real`. Passed to the trainer (`Trainer.line_search`), it keeps this study from copying the step's computation
    (the direction, its scaling, the chunked evaluation).
    """

    def probe(params, step, evaluate, max_kl, **kwargs):
        loss_before, kl_before = evaluate(params)
        record.update(max_kl=max_kl, loss_before=loss_before, kl_before=kl_before, fractions={})
        for f in fractions:
            candidate = {k: (p.detach() + f * step[k].detach()).requires_grad_(p.requires_grad)
                         for k, p in params.items()}
            loss, kl = evaluate(candidate)
            record["fractions"][str(f)] = {"kl": kl, "loss_change": loss - loss_before,
                                           "kl_over_model": kl / (f * f * max_kl)}
        return real(params, step, evaluate, max_kl=max_kl, **kwargs)

    return probe


def measure(run_dir: Path, checkpoint: Path | None, fractions: list[float], seed: int,
            activation: str = "relu") -> dict:
    # One thread each: the figures do not depend on it, and the machine may be training beside this.
    trainer = load_trainer(run_dir, checkpoint, {"sampler_threads": 1, "update_threads": 1})
    cfg = trainer.cfg
    if activation != "relu":
        smooth_body(trainer.policy, activation)
    trainer.reseed(seed)  # this meta-batch's tasks, env seeds and noise
    record: dict = {}
    trainer.line_search = probed_line_search(fractions, record)
    try:
        metrics = trainer.step()
    finally:
        trainer.close()
    return {"env": cfg.env, "algo": cfg.algo, "iteration": trainer.iteration - 1,
            "activation": activation, **record,
            "accepted_fraction": metrics["trpo/step_fraction"], "line_search_steps": metrics["trpo/line_search_steps"]}


def _markdown(result: dict) -> str:
    fractions = result["fractions"]
    lines = [f"`{result['command']}`, {result['date']}: one meta-batch (seed {result['seed']}) from each checkpoint; "
             "TRPO's step computed as in training, then the true post-adaptation KL at each fraction f of it, "
             "divided by the quadratic model's prediction f^2 max_kl (1 where the model is right), and the "
             "surrogate's change (negative is an improvement). `accepted` is the fraction the line search took.", "",
             "| run | iteration | " + " | ".join(f"f = {f}: KL / model, surrogate change" for f in fractions)
             + " | accepted |", "| --- | --- |" + " --- |" * (len(fractions) + 1)]
    for name, run in result["runs"].items():
        cells = [f"{run['fractions'][str(f)]['kl_over_model']:.2f}, {run['fractions'][str(f)]['loss_change']:.2e}"
                 for f in fractions]
        lines.append(f"| {name} | {run['iteration']} | " + " | ".join(cells) + f" | {run['accepted_fraction']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run directories")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a kept snapshot to read instead of each run's latest checkpoint (one run only)")
    parser.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.8, 0.5, 0.1, 0.01])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--activation", choices=["relu", *SMOOTH], default="relu",
                        help="the body's activation: relu (as trained) or a smooth one put in its place")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "trpo_step_kl",
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    bad = [f for f in args.fractions if not 0 < f <= 1]
    if bad:
        parser.error(f"--fractions must lie in (0, 1], got {bad}")
    if args.checkpoint is not None and len(args.runs) != 1:
        parser.error(f"--checkpoint names one run's snapshot; got {len(args.runs)} runs")
    torch.set_num_threads(1)
    result = {"command": " ".join(["python", "benchmarks/studies/trpo_step_kl.py", *(sys.argv[1:] if argv is None else argv)]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seed": args.seed,
              "fractions": args.fractions, "runs": {}}
    for run_dir in args.runs:
        name = f"{run_dir.parent.name}/{run_dir.name}" + (f" ({args.activation})" if args.activation != "relu" else "")
        result["runs"][name] = measure(run_dir, args.checkpoint, args.fractions, args.seed, args.activation)
        print(name, json.dumps(result["runs"][name]["fractions"]), flush=True)
    write_report(args.out, result, _markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
