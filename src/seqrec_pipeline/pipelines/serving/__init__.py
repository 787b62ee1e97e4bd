from .pipeline import (create_package_pipeline, create_rec_package_pipeline, create_rec_recommend_pipeline,
                       create_recommend_pipeline, create_rule_package_pipeline, create_rule_recommend_pipeline)

__all__ = ["create_package_pipeline", "create_rec_package_pipeline", "create_rec_recommend_pipeline",
           "create_recommend_pipeline", "create_rule_package_pipeline", "create_rule_recommend_pipeline"]
