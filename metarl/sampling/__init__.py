"""Episodes of many tasks at once: `sampler` steps one natively batched env (metarl.envs) with a policy's actions
and returns padded episode tensors. A second backend (physics on a GPU) goes beside it.

May import: metarl.common and metarl.envs; never the algorithm, the trainer, runs or experiments (the sampler knows
nothing of meta-learning).
"""
