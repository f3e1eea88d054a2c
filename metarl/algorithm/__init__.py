"""The meta-learning algorithm, on parameter dicts and batches of episodes: the Gaussian policy (`policy`), advantages
and the linear baseline (`advantages`), the inner-loop estimators (`estimators`) and learned inner rules
(`inner_optimizers`), the inner step and TRPO's meta-update (`metalearner`) with its curvature in closed form
(`fisher`, `inner_jacobian`), ProMP's outer loop (`promp`) and the optimiser helpers (`optim`). MAML and ANIL differ
only in the adapted keys.

May import: metarl.common and metarl.sampling (the episodes' container); never the trainer, runs, experiments or
the command line. Functions return metrics and never log.
"""
