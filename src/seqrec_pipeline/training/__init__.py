"""Training of the generative models with the DeepSpeed engine (no Kedro imports).

- :func:`train` (``trainer.py``): in-process training of any factory model on ``SampleDataset``s;
- :func:`launch_training` / :func:`launch_job` (``launch.py``): the same training in a subprocess started by a
  distributed launcher (``python -m seqrec_pipeline.training.launch <job.json>``), for Kedro nodes.

The ``launch`` module's names are imported lazily so that ``python -m seqrec_pipeline.training.launch`` does not
import its own module twice.
"""

from .distributed import DistInfo, setup_distributed
from .trainer import JsonlLogger, TrainConfig, TrainState, load_deepspeed_config, train, warmup_cosine

_LAUNCH_NAMES = ("JobContext", "launch_command", "launch_job", "launch_training", "run_job", "write_job")


def __getattr__(name: str):
    if name in _LAUNCH_NAMES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.launch"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DistInfo",
    "JsonlLogger",
    "TrainConfig",
    "TrainState",
    "load_deepspeed_config",
    "setup_distributed",
    "train",
    "warmup_cosine",
    *_LAUNCH_NAMES,
]
