"""Episodes of many tasks at once: `sampler` steps one natively batched env (metarl.envs) with a policy's actions
and returns padded episode tensors; with `physics: mjx` the batch is a device one (metarl.envs.mjx) and the episodes
stay on its device.

May import: metarl.common and metarl.envs; never the algorithm, the trainer, runs or experiments (the sampler knows
nothing of meta-learning).
"""
