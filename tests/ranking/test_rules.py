"""The rule baselines (smb_rule) on a hand-checked log: recent repeat, popularity, item transitions."""

import polars as pl

from seqrec_pipeline.ranking import rank_rule
from seqrec_pipeline.splits import eval_set


def _sequences() -> pl.DataFrame:
    # last_event: user 0 trains on items 1 2 1 3 (valid = 4), tests on position 5;
    # user 1 trains on 1 2 4 (valid = 3), tests on position 4; behaviors all 0
    rows = [(0, [1, 2, 1, 3, 2, 4]), (1, [1, 2, 4, 3, 1])]
    return pl.DataFrame(
        {"user_idx": [u for u, _ in rows], "item": [i for _, i in rows],
         "behavior": [[0] * len(i) for _, i in rows], "session": [list(range(len(i))) for _, i in rows],
         "n_events": [len(i) for _, i in rows],
         "last_event_valid": [4, 3], "last_event_test": [5, 4],
         "last_session_valid": [-1, -1], "last_session_test": [-1, -1]},
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32)},
    )


def test_rules_on_a_hand_checked_log():
    seq = _sequences()
    data = eval_set(seq, "last_event", "test", max_history=10)
    assert [h[:, 0].tolist() for h in data.histories] == [[1, 2, 1, 3, 2], [1, 2, 4, 3]]
    # recent: distinct history items, newest first
    assert rank_rule("recent", seq, data, 6, "last_event", 3).items.tolist() == [[2, 3, 1], [3, 4, 2]]
    # training events: 1 2 1 3 | 1 2 4 -> counts 1:3, 2:2, 3:1, 4:1 (ties by the same overall count)
    assert rank_rule("popularity", seq, data, 6, "last_event", 2).items.tolist() == [[1, 2], [1, 2]]
    # transitions in training: 1->2 (twice), 2->1, 1->3, 2->4; from the last history item (2 and 3)
    top = rank_rule("transitions", seq, data, 6, "last_event", 2).items.tolist()
    assert top[0] == [1, 4]  # 2->1 and 2->4 once each; the tie goes to the more popular item 1
    assert top[1][0] == 1  # 3 has no training successor: popularity order (1 first)
