"""Training on any tf.distribute strategy with checkpoints that survive a kill.

The loop itself is :func:`kseg.engine.train` (``kseg train`` calls it); this package holds its
parts: strategies by name, checkpoint files, the distributed steps.

Example:
    >>> import kseg
    >>> strategy = kseg.training.make_strategy("default")
    >>> strategy.num_replicas_in_sync
    1
"""

from kseg.training.checkpoint import CheckpointError, CheckpointStore
from kseg.training.loop import NonFiniteLossError, TrainingResult
from kseg.training.strategy import STRATEGIES, is_chief, make_strategy, parse_tf_config

__all__ = [
    "STRATEGIES",
    "CheckpointError",
    "CheckpointStore",
    "NonFiniteLossError",
    "TrainingResult",
    "is_chief",
    "make_strategy",
    "parse_tf_config",
]
