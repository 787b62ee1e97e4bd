from .pipeline import create_pipeline, create_repeat_pipeline, create_rule_pipeline

__all__ = ["create_pipeline", "create_repeat_pipeline", "create_rule_pipeline"]
