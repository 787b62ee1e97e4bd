"""Using a trained recommender: batch recommendations for the users of a log (``batch``), answers to request
histories of raw ids (``requests``), and the MLflow model that serves them (``pyfunc``).  No Kedro here."""

from .batch import recommend_users
from .recommender import Recommender, ServingSettings, build_recommender, popular_items

__all__ = ["Recommender", "ServingSettings", "build_recommender", "popular_items", "recommend_users"]
