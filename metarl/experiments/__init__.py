"""Experiments over many runs: the grid of (family, algorithm, seed) as a resumable sweep, locally (`sweep`) or on
Ray (`sweep_ray`); the baselines beside it (`baselines`); its report, split into what it reads (`records`), its tables
(`tables`), its figures (`figures`) and the publishing of runs (`publish`), brought together by `report`; a run
continued from another's checkpoint with settings changed (`branch`); and the feature-reuse analysis of one run
(`analysis`) with its similarity measures (`similarity`).

May import: everything beneath it (metarl.common, config, envs, sampling, algorithm, trainer, distributed, runs);
never the command line or the pages.
"""
