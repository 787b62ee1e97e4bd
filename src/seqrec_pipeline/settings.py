"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from seqrec_pipeline.hooks import ParameterHooks, TrackingHooks, TrackingStoreLock
from seqrec_pipeline.io.versioning import OwnVersionSession

HOOKS = (TrackingStoreLock(), ParameterHooks(), TrackingHooks())

# every run its own save version, even when two start in the same millisecond
SESSION_CLASS = OwnVersionSession

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # "soft": a dataset declared in conf/local is added to the built-in ones instead of replacing them
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
}
