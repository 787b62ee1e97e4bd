import numpy as np
import polars as pl

from seqrec_pipeline.vocab import item_codes


def test_item_codes_are_indexed_by_item_whatever_the_row_order():
    table = pl.DataFrame({"item_idx": [2, 0, 1], "c0": [7, 5, 6], "c1": [0, 1, 2]})
    np.testing.assert_array_equal(item_codes(table), [[5, 1], [6, 2], [7, 0]])
    np.testing.assert_array_equal(item_codes(table.sample(fraction=1.0, shuffle=True, seed=3)), item_codes(table))
