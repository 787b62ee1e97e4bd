"""Raw-format readers and custom Kedro datasets."""
