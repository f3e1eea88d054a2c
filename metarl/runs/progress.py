"""What a run shows while it trains (a progress line or bar) and the signals it turns into a clean stop."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

# -- progress -------------------------------------------------------------------------------------------------

def progress_line(metrics: dict, total: int) -> str:
    """One plain, fixed-width summary line of an iteration (for logs that are not a terminal)."""
    return (f"iter {metrics['iteration']:>{len(str(total))}}/{total}  env steps {metrics['env_steps']:>11,}  "
            f"return pre {metrics['returns/pre_adaptation']:9.2f} post {metrics['returns/post_adaptation']:9.2f}  "
            + (f"success pre {metrics['success/pre_adaptation']:.2f} post {metrics['success/post_adaptation']:.2f}  "
               if "success/post_adaptation" in metrics else "")
            + f"kl {metrics.get('trpo/kl', metrics.get('promp/kl', float('nan'))):.4f}  {metrics['time/iteration_s']:6.2f} s/it  "
            f"{metrics['time/env_steps_per_s']:>9,.0f} steps/s")


def eval_line(iteration: int, result: dict) -> str:
    steps = sorted(int(k.rsplit("_", 1)[1]) for k in result if k.startswith("return_step_") and not k.endswith("_std"))
    returns = "  ".join(f"{s}: {result[f'return_step_{s}']:.2f}" for s in steps)
    line = f"eval at iter {iteration}: held-out return by adaptation steps  {returns}"
    if "success_step_0" in result:
        line += "; success  " + "  ".join(f"{s}: {result[f'success_step_{s}']:.0%}" for s in steps)
    return line


class Progress:
    """A tqdm bar on a terminal; otherwise a plain line every `every` iterations, the first and the last."""

    def __init__(self, total: int, initial: int, bar: bool, every: int = 10):
        self.total, self.every, self.first = total, every, initial + 1
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="it", desc="meta-training", dynamic_ncols=True)

    def update(self, metrics: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"post-adaptation return {metrics['returns/post_adaptation']:.2f}, "
                                     f"{metrics['time/env_steps_per_s']:,.0f} env steps/s", refresh=False)
            self.bar.update(1)
            return
        it = metrics["iteration"]
        if it % self.every == 0 or it in (self.first, self.total):
            print(progress_line(metrics, self.total), flush=True)

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, so an interrupt never lands inside a log or checkpoint write
    (TensorBoard's writer shares locks with its own thread); a signal that came meanwhile is delivered at the end.

    The signals are recorded by a handler, not blocked with a signal mask: a mask covers the calling thread only, so
    a kill(2) lands on another thread (TensorBoard's, torch's) and Python still runs its handler in the main thread
    at once. Under load that raised KeyboardInterrupt inside the block: the checkpoint fell one iteration behind
    metrics.jsonl and the run took about two minutes to exit (TensorBoard's writer thread, whose flush interval is
    120 s)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, frame: caught.append(signum)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: a handler set outside Python, which we cannot restore
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if caught:  # delivered again, now to the handlers the caller had (KeyboardInterrupt, or the default action)
            signal.raise_signal(caught[0])


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (e.g. a job scheduler stopping us) like Ctrl-C, so it also saves a checkpoint."""
    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
