from .pipeline import create_compare_pipeline, create_pipeline

__all__ = ["create_compare_pipeline", "create_pipeline"]
