"""Run windows come from the scheduler's dates and upstream asset events, never from the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipelines.windows import day_window, window_extra, window_from_events

GST = timezone(timedelta(hours=4))  # Gulf Standard Time, where the bank's operators sit


def test_window_ending_on_a_midnight_keeps_its_end() -> None:
    # Given a logical date exactly on a UTC midnight
    end = datetime(2026, 11, 1, tzinfo=UTC)

    # When a three-day window is derived
    start, stop = day_window(end, 3)

    # Then it covers the three whole days before that midnight
    assert (start, stop) == (datetime(2026, 10, 29, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))


def test_window_ending_mid_day_snaps_up_to_the_next_midnight() -> None:
    # Given a logical date in the middle of a UTC day
    end = datetime(2026, 11, 1, 5, 30, 12, 7, tzinfo=UTC)

    # When a one-day window is derived
    start, stop = day_window(end, 1)

    # Then the partial day is included whole: [1 Nov, 2 Nov)
    assert (start, stop) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))


def test_window_of_a_non_utc_end_snaps_in_utc() -> None:
    # Given 02:00 on 1 Nov in Dubai, which is 22:00 UTC on 31 Oct
    end = datetime(2026, 11, 1, 2, 0, tzinfo=GST)

    # When a two-day window is derived
    start, stop = day_window(end, 2)

    # Then the days are UTC days: [30 Oct, 1 Nov) UTC, with UTC offsets
    assert (start, stop) == (datetime(2026, 10, 30, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    assert start.utcoffset() == stop.utcoffset() == timedelta(0)
    assert stop - start == timedelta(days=2)


@pytest.mark.parametrize("lookback", [0, -1])
def test_lookback_below_one_day_is_refused(lookback: int) -> None:
    # Given a lookback that would make an empty or inverted window
    # When the window is derived
    # Then it is refused with the value in the message
    with pytest.raises(ValueError, match=f"at least 1, got {lookback}"):
        day_window(datetime(2026, 11, 1, tzinfo=UTC), lookback)


def test_window_from_events_is_the_union_of_their_windows() -> None:
    # Given three upstream runs that published overlapping and disjoint windows, out of order
    events = [
        window_extra(datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC)),
        window_extra(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 3, tzinfo=UTC)),
        window_extra(datetime(2026, 10, 2, tzinfo=UTC), datetime(2026, 10, 4, tzinfo=UTC)),
    ]

    # When the downstream window is derived from their extras
    window = window_from_events(events)

    # Then it spans from the earliest start to the latest end
    assert window == (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC))


def test_events_without_a_window_are_ignored() -> None:
    # Given one event with a window and others that carry no (or half a) window
    events = [
        {"run": "manual"},
        {"start": "2026-10-01T00:00:00+00:00"},
        window_extra(datetime(2026, 10, 7, tzinfo=UTC), datetime(2026, 10, 8, tzinfo=UTC)),
    ]

    # When the window is derived
    # Then only the complete window counts
    expected = (datetime(2026, 10, 7, tzinfo=UTC), datetime(2026, 10, 8, tzinfo=UTC))
    assert window_from_events(events) == expected


@pytest.mark.parametrize(
    "events", [[], [{}, {"end": "2026-10-01T00:00:00+00:00"}]], ids=["none", "no-windows"]
)
def test_no_window_in_events_gives_none(events: list[dict[str, str]]) -> None:
    # Given no event that carries a window
    # When the window is derived
    # Then there is none, rather than a made-up one
    assert window_from_events(events) is None


def test_window_extra_round_trips_with_its_timezone() -> None:
    # Given a window in a non-UTC zone
    start, end = datetime(2026, 10, 1, 4, tzinfo=GST), datetime(2026, 10, 2, 4, tzinfo=GST)

    # When it is written to an asset event's extra and read back
    extra = window_extra(start, end)
    window = window_from_events([extra])

    # Then the extra is plain strings (JSON-safe) and the same instants come back
    assert all(isinstance(value, str) for value in extra.values())
    assert window == (start, end)
    assert window is not None and window[0].utcoffset() == timedelta(hours=4)
