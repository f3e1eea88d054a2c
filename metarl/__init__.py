"""metarl: policy-gradient MAML and ANIL on MuJoCo task distributions.

Importing the package registers the built-in task families with gymnasium, so
`gymnasium.make("metarl:metarl/HalfCheetahDir-v0")` works.
"""

from metarl import envs  # noqa: F401  (registers the task families)

__version__ = "0.1.0"
