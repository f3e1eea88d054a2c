"""`metarl sweep --engine ray`: the grid's runs as tasks of a Ray cluster (the optional extra `ray`).

Each cell is one Ray task that reserves `cpus` CPUs and runs the local sweep's own `train_cell` (the same run
directories, locks, timing.json and final evaluation), so a grid may be spread over many machines and a later
call, local or on Ray, resumes it. ROOT must be a folder every worker sees at the same path (a shared file
system). Ray schedules the tasks on the cluster `address` names (`ray start --head` on one machine, `ray start
--address HEAD:6379` on the others), or on a local instance started for the call when it is None.
"""

from __future__ import annotations

from pathlib import Path


def run_ray(root: Path, cells: list[tuple[str, str, int]], overrides: dict, eval_tasks: int, cpus: int,
            address: str | None = None) -> int:
    """Train the cells as Ray tasks with `cpus` CPUs each; returns sweep.report_failures' code, or 130 on Ctrl-C
    (the running tasks are cancelled: each saves its checkpoint)."""
    from metarl.experiments import sweep

    try:
        import ray
    except ImportError:
        raise sweep.SweepError("--engine ray needs Ray, which is not installed: pip install \"metarl[ray]\" "
                               "(in a checkout: pip install -e \".[ray]\")") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    # one simulator and one update thread per CPU share unless --set says otherwise (as with --jobs)
    jobs = max(2, int(ray.cluster_resources().get("CPU", 2)) // cpus)
    task = ray.remote(num_cpus=cpus, max_retries=0)(_cell)
    refs = {task.remote(str(root.resolve()), env, algo, seed, overrides, jobs, eval_tasks):
            sweep.cell_name(env, algo, seed, overrides) for env, algo, seed in cells}
    failures = []
    try:
        for ref, name in refs.items():
            try:
                print(ray.get(ref), flush=True)
            except ray.exceptions.RayError as exc:
                failures.append(name)
                first = (str(exc).strip().splitlines() or [""])[-1][:300]
                print(f"{name}: error: {first}", flush=True)
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref)
        print("\ninterrupted: the running runs were cancelled (each saves its checkpoint); run the same command "
              "again to resume")
        return sweep.EXIT_INTERRUPTED
    finally:
        if started:
            ray.shutdown()
    return sweep.report_failures(failures)


def _cell(root: str, env: str, algo: str, seed: int, overrides: dict, jobs: int, eval_tasks: int) -> str:
    """One cell on a Ray worker: the local sweep's train_cell."""
    from metarl.experiments import sweep

    return sweep.train_cell(Path(root), env, algo, seed, overrides, jobs, eval_tasks)
