"""Dataset report: repeat shares counted by hand, and the figure renders every panel."""

from seqrec_pipeline.data.preprocess import build_primary
from seqrec_pipeline.reporting.dataset import build_report, repeat_shares, report_figure
from tests.data.test_preprocess import LEVELS, NO_FILTER, events

HOUR = 3600


def _primary():
    rows = [
        # user u: sessions 0..4 (valid = session 3, test = session 4)
        ("u", "a", "view", 0), ("u", "b", "view", 10),                     # session 0 (no history)
        ("u", "a", "cart", 1 * HOUR), ("u", "c", "view", 1 * HOUR + 5),    # session 1: cart a repeats
        ("u", "c", "buy", 2 * HOUR), ("u", "d", "buy", 2 * HOUR + 5),      # session 2: buy c repeats, d new
        ("u", "b", "buy", 3 * HOUR), ("u", "e", "view", 3 * HOUR + 5),     # valid: buy b repeats, view e new
        ("u", "e", "buy", 4 * HOUR), ("u", "f", "view", 4 * HOUR + 5),     # test: buy e repeats, view f new
        # user w: 3 sessions, nothing repeats
        ("w", "x", "view", 0), ("w", "y", "buy", 1 * HOUR), ("w", "z", "cart", 2 * HOUR),
    ]
    return build_primary(events(rows), LEVELS, NO_FILTER, session_gap_minutes=30)


def test_repeat_shares_by_hand():
    primary = _primary()
    shares = repeat_shares(primary.sequences, primary.behaviors)
    # train = sessions after each user's first, before valid: u's sessions 1-2 (cart a, view c, buy c, buy d)
    assert shares["train"]["cart"] == {"events": 1, "repeat_share": 1.0}
    assert shares["train"]["view"] == {"events": 1, "repeat_share": 0.0}
    assert shares["train"]["buy"] == {"events": 2, "repeat_share": 0.5}
    # valid: u (buy b repeats, view e new) + w (buy y new)
    assert shares["valid"]["buy"] == {"events": 2, "repeat_share": 0.5}
    assert shares["valid"]["view"] == {"events": 1, "repeat_share": 0.0}
    # test: u (buy e repeats the valid session's view e; view f new) + w (cart z new)
    assert shares["test"]["buy"] == {"events": 1, "repeat_share": 1.0}
    assert shares["test"]["view"] == {"events": 1, "repeat_share": 0.0}
    assert shares["test"]["cart"] == {"events": 1, "repeat_share": 0.0}


def test_report_carries_repeat_shares_and_figure_has_six_panels():
    primary = _primary()
    ingest = {"n_raw": 13, "n_rejected": 0}
    report = build_report("toy", primary.sequences, primary.items, primary.behaviors, ingest, primary.stats)
    assert report["repeat_share"]["test"]["buy"]["repeat_share"] == 1.0
    fig = report_figure(report, primary.sequences, primary.items)
    assert len(fig.axes) == 6 and all(ax.has_data() for ax in fig.axes)
