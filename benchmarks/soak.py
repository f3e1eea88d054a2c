"""Soak test of exact resume: short training runs killed by SIGKILL at random moments, resumed, compared exactly.

Each trial starts `metarl train` on a tiny nav2d run and kills it (SIGKILL: no handler runs, nothing is flushed)
one to three times at moments drawn uniformly over an uninterrupted run's duration, each time resuming with
`metarl train --resume` (or, when the kill came before the first checkpoint, starting again as the error says);
the last sitting runs to the end. The finished run must equal an uninterrupted run of the same length: every
metrics.jsonl record (times aside) and every tensor and random-generator state of the final checkpoint. A resume
must also never be refused by a lock the killed process left. The table counts the trials, the kills by where they
landed and the identical runs.

    python benchmarks/soak.py                       # 20 trials: benchmarks/results/reliability/soak.{json,md}
    python benchmarks/soak.py --trials 2 --out /tmp/soak   # a smoke test
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metarl.common.files import write_report  # noqa: E402

TINY = ["meta_batch_size=4", "episodes_per_task=4", "horizon=20", "eval_every=3", "eval_tasks=3",
        "eval_episodes_per_task=3", "eval_steps=1", "hidden_sizes=[16,16]", "checkpoint_every=2",
        "sampler_threads=1", "update_threads=1"]


def train(run_dir: Path, iterations: int, seed: int) -> list[str]:
    return [sys.executable, "-m", "metarl.cli", "train", "--env", "nav2d", "--seed", str(seed), "--iterations",
            str(iterations), "--run-dir", str(run_dir), "--set", *TINY]


def resume(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "metarl.cli", "train", "--resume", str(run_dir)]


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def same(a, b) -> bool:
    """Exact equality of nested checkpoint contents (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def where(run_dir: Path) -> int:
    """Where a kill landed: the iteration of the run's last checkpoint (-1: before the first one)."""
    return checkpoint(run_dir)["trainer"]["iteration"] if (run_dir / "checkpoint.pt").is_file() else -1


def trial(run_dir: Path, iterations: int, seed: int, duration: float, rng: random.Random) -> dict:
    kills = []
    argv = train(run_dir, iterations, seed)
    for _ in range(rng.randint(1, 3)):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=run_dir.parent)
        time.sleep(rng.uniform(0.0, 0.9 * duration))  # a fresh sitting lasts about `duration`: the first kill lands
        if proc.poll() is not None:  # a resumed sitting finished first: this trial has fewer kills
            return {"kills": kills, "refused": int(proc.returncode != 0), "stderr": proc.stderr.read().strip()[-300:]}
        proc.kill()
        proc.wait()
        kills.append(where(run_dir))
        if (run_dir / "checkpoint.pt").is_file():
            argv = resume(run_dir)
        else:  # killed before its first checkpoint: start again, as `metarl train --resume` would say
            shutil.rmtree(run_dir, ignore_errors=True)
            argv = train(run_dir, iterations, seed)
    last = subprocess.run(argv, capture_output=True, text=True, cwd=run_dir.parent)
    return {"kills": kills, "refused": int(last.returncode != 0), "stderr": last.stderr.strip()[-300:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (the runs use seed 1)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reliability" / "soak")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        start = time.perf_counter()
        subprocess.run(train(reference, args.iterations, 1), check=True, capture_output=True, cwd=tmp)
        duration = time.perf_counter() - start
        want_records, want_ckpt = records(reference), checkpoint(reference)
        results = []
        for i in range(args.trials):
            run_dir = Path(tmp) / f"trial-{i:02d}"
            t = trial(run_dir, args.iterations, 1, duration, rng)
            t["identical"] = (not t["refused"] and records(run_dir) == want_records
                              and same(checkpoint(run_dir), want_ckpt))
            results.append(t)
            print(f"trial {i + 1}/{args.trials}: {len(t['kills'])} kill(s) (last checkpoint: {', '.join(map(str, t['kills'])) or 'none'}): "
                  f"{'identical' if t['identical'] else 'DIFFERENT ' + t['stderr']}", flush=True)
    at = [k for t in results for k in t["kills"]]
    landed = {"before the first checkpoint": sum(k < 0 for k in at),
              "with a checkpoint (iterations 0-N)": sum(k >= 0 for k in at)}
    summary = {"trials": len(results), "kills": sum(len(t["kills"]) for t in results), "landed": landed,
               "identical": sum(t["identical"] for t in results), "refused_resumes": sum(t["refused"] for t in results),
               "iterations": args.iterations, "uninterrupted_s": round(duration, 2), "seed": args.seed,
               "machine": f"{platform.machine()}, {platform.python_version()}",
               "command": "python benchmarks/soak.py" + (f" --trials {args.trials}" if args.trials != 20 else "")}
    md = ["| trials | SIGKILLs | where they landed | resumes refused | identical to an uninterrupted run |",
          "|---|---|---|---|---|",
          f"| {summary['trials']} | {summary['kills']} | "
          + f"{landed['before the first checkpoint']} before the first checkpoint, "
          f"{landed['with a checkpoint (iterations 0-N)']} later (checkpoints of iterations "
          f"{min((k for k in at if k >= 0), default='-')}-{max(at, default='-')} on disk) | "
          f"{summary['refused_resumes']} | {summary['identical']} of {summary['trials']} |", "",
          f"Each run: {args.iterations} iterations of a tiny nav2d problem ({' '.join(TINY)}), uninterrupted in "
          f"{summary['uninterrupted_s']} s. Command: `{summary['command']}`."]
    write_report(args.out, {"summary": summary, "trials": results}, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if summary["identical"] == summary["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
