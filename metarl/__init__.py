"""metarl: policy-gradient MAML and ANIL on MuJoCo task distributions.

Importing the package registers the built-in task families with gymnasium, so
`gymnasium.make("metarl:metarl/HalfCheetahDir-v0")` works.
"""

from metarl import _moved, envs  # noqa: F401  (envs registers the task families)

_moved.install()  # the import paths from before the layers became folders keep working (metarl/_moved.py)

__version__ = "0.1.0"
