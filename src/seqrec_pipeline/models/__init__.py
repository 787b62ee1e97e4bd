"""Pure PyTorch / numpy models: tokenizers, generative and discriminative recommenders (no Kedro imports)."""
