"""seqrec_pipeline: generative sequential recommendation with semantic IDs, as a Kedro project."""

__version__ = "0.1.0"
