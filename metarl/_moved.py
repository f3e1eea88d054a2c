"""Import paths from before the package's layers became folders (issue 53) keep working: `import metarl.policy` gives
the module that now lives at metarl.algorithm.policy, the same object under both names (so patching one patches the
other). New code imports the new paths."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    **{f"metarl.{name}": f"metarl.common.{name}" for name in ("files", "lock", "threads", "allocator", "provenance")},
    **{f"metarl.{name}": f"metarl.algorithm.{name}"
       for name in ("policy", "advantages", "estimators", "inner_optimizers", "metalearner", "inner_jacobian",
                    "fisher", "promp", "optim")},
    "metarl.sampler": "metarl.sampling.sampler",
    "metarl.run": "metarl.runs",
    "metarl.divergence": "metarl.runs.divergence",
    **{f"metarl.{name}": f"metarl.experiments.{name}"
       for name in ("sweep", "sweep_ray", "baselines", "report", "analysis", "similarity")},
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path of MOVED and hands out the module at its new one."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:  # the new module ran when it was imported
        pass


def install() -> None:
    """Put the finder on sys.meta_path once (importing metarl does)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
