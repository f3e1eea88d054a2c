"""Training health: stop a run whose numbers are no longer finite, warn about one whose trust-region steps all fail.

A diverged run (a NaN surrogate, KL, meta-gradient or return) goes on logging NaN while every TRPO step is rejected
and the meta-parameters never move; left alone it would end with "done". `DivergenceWatch` sees each iteration's
metrics, counts consecutive bad iterations and, after `max_bad_iterations` of them, raises `Diverged` naming the
metric, the iteration and the likely cause. It also warns once when `warn_rejected_iterations` TRPO steps in a row
were rejected (the run trains nothing: `max_kl` or the inner step size far off).
"""

from __future__ import annotations

import math

from metarl.config import Config

# The metrics that must stay finite, in the order a cause shows itself (returns first: a NaN return makes every
# later number NaN too).
WATCHED = ("returns/pre_adaptation", "returns/post_adaptation", "trpo/surrogate_before", "trpo/kl",
           "trpo/grad_norm", "trpo/surrogate_after", "promp/loss_before", "promp/kl", "promp/grad_norm",
           "promp/loss_after")


MAX_SANE_LOG_STD = 10.0  # |init_log_std| beyond this (a std beyond e^10) is named as the cause first


class Diverged(Exception):
    """The run stopped after `max_bad_iterations` consecutive iterations with a non-finite metric."""


def likely_cause(metric: str, cfg: Config) -> str:
    """The settings that usually make `metric` non-finite, with the run's values."""
    if abs(cfg.init_log_std) > MAX_SANE_LOG_STD:
        return (f"init_log_std={cfg.init_log_std:g} makes the policy's standard deviation e^{cfg.init_log_std:g}, "
                "which overflows its log-probabilities; use a value near 0")
    if metric == "returns/pre_adaptation":
        return (f"the policy's actions or the env's rewards are not finite (init_log_std={cfg.init_log_std:g} too "
                "large, or the env returns NaN)")
    if metric == "returns/post_adaptation":
        return f"the inner step diverged (inner_lr={cfg.inner_lr:g} too large for this family)"
    return (f"the adapted policy overflowed (inner_lr={cfg.inner_lr:g} or init_log_std={cfg.init_log_std:g} too large, "
            "or advantages without normalize_advantages)")


class DivergenceWatch:
    """Counts consecutive iterations with non-finite metrics, and consecutive rejected TRPO steps."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.bad_streak: list[int] = []  # iterations of the current run of bad ones
        self.rejected_streak = 0
        self.warned = False

    @staticmethod
    def non_finite(metrics: dict) -> str | None:
        """The first watched metric of `metrics` that is not a finite number, else None."""
        for key in WATCHED:
            value = metrics.get(key)
            if value is not None and not math.isfinite(value):
                return key
        return None

    def check(self, metrics: dict, last: bool = False) -> tuple[str | None, str | None]:
        """See one iteration: (the bad metric or None, a warning to give once or None).

        Raises Diverged when max_bad_iterations consecutive iterations were bad, or the `last` iteration of the run
        was (it would be the run's result). With max_bad_iterations = 0 nothing is watched: the bad metric is
        always None.
        """
        limit = self.cfg.max_bad_iterations
        it, bad = metrics["iteration"], self.non_finite(metrics) if limit else None
        self.bad_streak = self.bad_streak + [it] if bad else []
        if bad and (len(self.bad_streak) >= limit or last):
            streak = self.bad_streak
            span = f"iteration {it}" if len(streak) == 1 else f"iterations {streak[0]}-{it}"
            why = "the run's last iteration" if len(streak) < limit else f"max_bad_iterations={limit}"
            raise Diverged(f"training diverged: {bad} is {metrics[bad]} at {span} ({why}); "
                           f"likely cause: {likely_cause(bad, self.cfg)}")
        warning = None
        self.rejected_streak = 0 if metrics.get("trpo/step_accepted", 1.0) else self.rejected_streak + 1
        need = self.cfg.warn_rejected_iterations
        if need and self.rejected_streak >= need and not self.warned:
            self.warned = True
            warning = (f"warning: every TRPO step of the last {need} iterations ({it - need + 1}-{it}) was rejected, "
                       f"so the meta-parameters have not moved; check max_kl={self.cfg.max_kl:g} and "
                       f"inner_lr={self.cfg.inner_lr:g} (warn_rejected_iterations={need})")
        return bad, warning
