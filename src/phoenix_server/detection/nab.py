"""Labelled metric streams in the Numenta Anomaly Benchmark's format, and NAB's scoring rule.

A corpus is a folder of ``timestamp,value`` CSV files plus a ``labels.json`` of anomaly
windows. A detector's scores are judged by :func:`tally` at one threshold, or by
:func:`best_thresholds`, which finds the threshold that scores best for each profile. The one
thing to know: a window rewards only its *earliest* detection (earlier is worth more), and a
detection outside every window costs a little or a lot depending on how long after a window
it comes — so a detector that keeps shouting through an incident pays for it.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from phoenix_server.detection.anomaly import Scorer


class DataError(Exception):
    """A corpus file or the labels cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Profile:
    """NAB's weights: what a true positive earns, a false positive and a miss cost."""

    name: str
    true_positive: float
    false_positive: float
    false_negative: float


STANDARD = Profile("standard", 1.0, 0.11, 1.0)
REWARD_LOW_FP = Profile("reward_low_FP", 1.0, 0.22, 1.0)
REWARD_LOW_FN = Profile("reward_low_FN", 1.0, 0.11, 2.0)
PROFILES = (STANDARD, REWARD_LOW_FP, REWARD_LOW_FN)


# -- reading -----------------------------------------------------------------------------------


class Problem(StrEnum):
    """What can be odd about a row. Each is reported, none stops the run (as NAB's scorer)."""

    OUT_OF_ORDER = "out of time order"
    DUPLICATE = "duplicate timestamp"
    GAP = "gap"
    CONSTANT = "constant stretch"
    NOT_A_NUMBER = "not a number"
    UNREADABLE = "unreadable row"


@dataclass(frozen=True)
class RowWarning:
    """One odd row of one file; ``line`` is the file's line number (the header is line 1)."""

    file: str
    line: int
    problem: Problem
    detail: str
    """What is odd and what was done about it, in words."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.detail}"


GAP_FACTOR = 3.0
"""A step longer than this many times the file's usual (median) step is a gap."""
CONSTANT_ROWS = 100
CONSTANT_SHARE = 0.10
"""A run of one value is worth a warning from this many rows and this share of the file: a
stuck exporter or filled-in missing data, not a quiet metric that repeats itself a while."""


@dataclass(frozen=True)
class Stream:
    """One file of a corpus: ``name`` is its path relative to the corpus folder."""

    name: str
    timestamps: list[str]
    """As written in the file, so that an output file can repeat them exactly."""
    times: list[datetime]
    values: list[float]
    """A value that is not a finite number is NaN: a gap the detector scores 0."""
    warnings: tuple[RowWarning, ...] = ()
    ordered: bool = True
    """No row is earlier than the one before (so windows can be found by bisection)."""


@dataclass(frozen=True, order=True)
class Window:
    """An anomaly window as row indices, both ends included."""

    first: int
    last: int

    @property
    def width(self) -> int:
        return self.last - self.first + 1


def parse_time(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS``, optionally with fractional seconds as in NAB's labels."""
    return datetime.fromisoformat(text.strip())


def read_stream(path: Path, name: str) -> Stream:
    """Read one ``timestamp,value`` file, in file order, noting each odd row in ``warnings``.

    Raise :class:`DataError` only when the file as a whole is unusable: unreadable, no
    ``timestamp,value`` header, or not one row with a time and a number.
    """
    try:
        # utf-8-sig: a spreadsheet's export starts with a byte-order mark the header must not see.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = csv.reader(handle)
            header = next(rows, None)
            if header is None or [cell.strip() for cell in header] != ["timestamp", "value"]:
                raise DataError(f"{path}:1: expected the header 'timestamp,value', got {header}")
            reader = _Reader(str(path))
            for row in rows:
                if row:
                    reader.add(rows.line_num, row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if not any(math.isfinite(value) for value in reader.values):
        raise DataError(f"{path}: no row with a timestamp and a number in it")
    return reader.stream(name)


class _Reader:
    """The rows of one file as they are read, and what was odd about them."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.timestamps: list[str] = []
        self.times: list[datetime] = []
        self.values: list[float] = []
        self.lines: list[int] = []
        self.warnings: list[RowWarning] = []
        self._seen: set[datetime] = set()
        self._ordered = True

    def warn(self, line: int, problem: Problem, detail: str) -> None:
        self.warnings.append(RowWarning(self.file, line, problem, detail))

    def add(self, line: int, row: list[str]) -> None:
        if len(row) != 2:
            got = ",".join(row)
            detail = f"expected 'YYYY-MM-DD HH:MM:SS,<number>', got {got!r}; row skipped"
            self.warn(line, Problem.UNREADABLE, detail)
            return
        stamp, cell = row
        try:
            moment = parse_time(stamp)
        except ValueError:
            detail = f"timestamp {stamp!r} is not YYYY-MM-DD HH:MM:SS; row skipped"
            self.warn(line, Problem.UNREADABLE, detail)
            return
        self._check_time(line, stamp, moment)
        self.timestamps.append(stamp)
        self.times.append(moment)
        self.values.append(self._number(line, cell))
        self.lines.append(line)

    def _check_time(self, line: int, stamp: str, moment: datetime) -> None:
        if moment in self._seen:
            detail = f"timestamp {stamp} already appeared; both rows scored in file order"
            self.warn(line, Problem.DUPLICATE, detail)
        elif self.times and moment < self.times[-1]:
            self._ordered = False
            detail = (
                f"timestamp {stamp} is earlier than the row before ({self.timestamps[-1]}); "
                "scored in file order"
            )
            self.warn(line, Problem.OUT_OF_ORDER, detail)
        self._seen.add(moment)

    def _number(self, line: int, cell: str) -> float:
        try:
            number = float(cell)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            what = "an empty value" if not cell.strip() else f"value {cell!r}"
            detail = f"{what} is not a finite number; scored as a gap (score 0)"
            self.warn(line, Problem.NOT_A_NUMBER, detail)
            return math.nan
        return number

    def stream(self, name: str) -> Stream:
        self._check_gaps()
        self._check_constant_stretches()
        self.warnings.sort(key=lambda warning: warning.line)
        return Stream(
            name,
            self.timestamps,
            self.times,
            self.values,
            tuple(self.warnings),
            self._ordered,
        )

    def _check_gaps(self) -> None:
        steps = [
            (later - earlier).total_seconds() for earlier, later in itertools.pairwise(self.times)
        ]
        forward = [step for step in steps if step > 0]
        if not forward:
            return
        usual = statistics.median(forward)
        for row, step in enumerate(steps, start=1):
            if step > GAP_FACTOR * usual:
                detail = (
                    f"gap of {timedelta(seconds=step)} since the row before "
                    f"(the usual step is {timedelta(seconds=usual)})"
                )
                self.warn(self.lines[row], Problem.GAP, detail)

    def _check_constant_stretches(self) -> None:
        least = max(CONSTANT_ROWS, math.ceil(CONSTANT_SHARE * len(self.values)))
        row = 0
        for value, run in itertools.groupby(self.values):
            length = sum(1 for _ in run)
            if length >= least:
                last = self.lines[row + length - 1]
                detail = (
                    f"value {value!r} repeats for {length} rows (to line {last}), "
                    "as a stuck source or filled-in data would; scored as it is"
                )
                self.warn(self.lines[row], Problem.CONSTANT, detail)
            row += length


def read_corpus(folder: Path) -> list[Stream]:
    """Every ``*.csv`` below ``folder``, in name order; raise on the first unusable file."""
    corpus = load_corpus(folder)
    if corpus.skipped:
        raise corpus.skipped[0]
    return corpus.streams


@dataclass(frozen=True)
class Corpus:
    """The usable files of a folder, and why each of the others was left out."""

    streams: list[Stream]
    skipped: list[DataError]


def load_corpus(folder: Path) -> Corpus:
    """Every ``*.csv`` below ``folder``, in name order, named by their relative paths; a file
    that is unusable as a whole is skipped, so one bad export does not stop the others."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    paths = sorted(folder.rglob("*.csv"))
    if not paths:
        raise DataError(f"{folder}: no .csv files in it")
    streams: list[Stream] = []
    skipped: list[DataError] = []
    for path in paths:
        try:
            streams.append(read_stream(path, path.relative_to(folder).as_posix()))
        except DataError as exc:
            skipped.append(exc)
    return Corpus(streams, skipped)


def read_labels(path: Path) -> dict[str, list[tuple[datetime, datetime]]]:
    """``{"<folder>/<name>.csv": [["<start>", "<end>"], ...]}`` as parsed times."""
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object of file name -> list of [start, end]")
    labels: dict[str, list[tuple[datetime, datetime]]] = {}
    for name, windows in raw.items():
        try:
            pairs = [(parse_time(start), parse_time(end)) for start, end in windows]
        except (TypeError, ValueError, AttributeError):
            raise DataError(
                f"{path}: {name!r}: expected a list of [start, end] timestamps, got {windows!r}"
            ) from None
        labels[name] = pairs
    return labels


def windows_of(stream: Stream, spans: Iterable[tuple[datetime, datetime]]) -> list[Window]:
    """The rows inside each labelled span (ends included); spans holding no row are dropped.

    In a file whose rows are out of time order, a window runs from the first to the last row
    (in file order) whose time is in the span, and windows that then overlap become one.
    """
    found = [_rows_within(stream, start, end) for start, end in sorted(spans)]
    windows: list[Window] = []
    for window in sorted(window for window in found if window is not None):
        if windows and window.first <= windows[-1].last:
            windows[-1] = Window(windows[-1].first, max(windows[-1].last, window.last))
        else:
            windows.append(window)
    return windows


def _rows_within(stream: Stream, start: datetime, end: datetime) -> Window | None:
    if stream.ordered:
        first = bisect.bisect_left(stream.times, start)
        last = bisect.bisect_right(stream.times, end) - 1
        return Window(first, last) if first <= last else None
    inside = [row for row, moment in enumerate(stream.times) if start <= moment <= end]
    return Window(inside[0], inside[-1]) if inside else None


def labelled_windows(
    streams: Sequence[Stream], labels: dict[str, list[tuple[datetime, datetime]]]
) -> dict[str, list[Window]]:
    """Each stream's windows; a stream the labels do not mention cannot be scored."""
    missing = [stream.name for stream in streams if stream.name not in labels]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"the labels have no entry for {missing[0]}{more}")
    return {stream.name: windows_of(stream, labels[stream.name]) for stream in streams}


# -- running a detector ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Every stream's scores, and the time spent inside the detectors alone."""

    scores: dict[str, list[float]]
    points: int
    seconds: float

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else math.inf


def run(streams: Sequence[Stream], make_detector: Callable[[], Scorer]) -> Run:
    """Feed each stream, one sample at a time, to a fresh detector."""
    scores: dict[str, list[float]] = {}
    points = 0
    seconds = 0.0
    for stream in streams:
        detector = make_detector()
        moments = [moment.replace(tzinfo=UTC).timestamp() for moment in stream.times]
        started = time.perf_counter()
        scores[stream.name] = [
            detector.score(value, moment)
            for value, moment in zip(stream.values, moments, strict=True)
        ]
        seconds += time.perf_counter() - started
        points += len(stream.values)
    return Run(scores, points, seconds)


# -- the scoring rule --------------------------------------------------------------------------


def probation(length: int) -> int:
    """Rows at the start of a stream that are not scored: ``min(floor(0.15·n), 750)``."""
    return min(length * 15 // 100, 750)


def sigmoid(y: float) -> float:
    """NAB's ``f(y) = 2/(1+e^{5y}) - 1``: +1 far before, 0 at, -1 far after a window's end."""
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


_EARLIEST = sigmoid(-1.0)


def detection_reward(window: Window, row: int) -> float:
    """What the earliest detection at ``row`` inside ``window`` earns, before weighting (≤ 1)."""
    return sigmoid(-(window.last - row + 1) / window.width) / _EARLIEST


def false_alarm_cost(previous: Window | None, row: int) -> float:
    """What a detection outside every window costs, before weighting (between 0 and 1)."""
    if previous is None:
        return 1.0
    y = (row - previous.last) / max(previous.width - 1, 1)
    return 1.0 if y > 3.0 else -sigmoid(y)


@dataclass(frozen=True)
class Tally:
    """A corpus's detections at one threshold, unweighted, so any profile can be applied."""

    windows: int
    detected: float
    """Sum of the rewards of the windows' earliest detections."""
    missed: int
    false_alarms: float
    """Sum of the costs of detections outside windows."""
    alarms: int = 0
    """How many detections fell outside windows."""

    def raw(self, profile: Profile) -> float:
        return (
            profile.true_positive * self.detected
            - profile.false_positive * self.false_alarms
            - profile.false_negative * self.missed
        )

    def normalised(self, profile: Profile) -> float:
        """``100·(raw - null)/(perfect - null)``: 0 for no detections, 100 for perfect ones."""
        if self.windows == 0:
            return math.nan  # nothing to find: the scale has no ends
        null = -profile.false_negative * self.windows
        perfect = profile.true_positive * self.windows
        return 100.0 * (self.raw(profile) - null) / (perfect - null)


def tally(scores: Sequence[float], windows: Sequence[Window], threshold: float) -> Tally:
    """Score one stream's ``scores`` against its sorted ``windows`` at ``threshold`` (≥)."""
    start = probation(len(scores))
    detected = 0.0
    missed = 0
    for window in windows:
        rows = range(max(window.first, start), window.last + 1)
        hit = next((row for row in rows if scores[row] >= threshold), None)
        if hit is None:
            missed += 1
        else:
            detected += detection_reward(window, hit)
    false_alarms = 0.0
    alarms = 0
    for row, previous in _rows_outside(windows, start, len(scores)):
        if scores[row] >= threshold:
            false_alarms += false_alarm_cost(previous, row)
            alarms += 1
    return Tally(len(windows), detected, missed, false_alarms, alarms)


def _rows_outside(
    windows: Sequence[Window], start: int, stop: int
) -> Iterable[tuple[int, Window | None]]:
    """The scored rows outside every window, each with the last window that ended before it."""
    previous: Window | None = None
    upcoming = iter(windows)
    following = next(upcoming, None)
    for row in range(start, stop):
        while following is not None and following.last < row:
            previous, following = following, next(upcoming, None)
        if following is None or row < following.first:
            yield row, previous


def combine(tallies: Iterable[Tally]) -> Tally:
    """The corpus's tally from its streams' tallies."""
    windows = missed = alarms = 0
    detected = false_alarms = 0.0
    for part in tallies:
        windows += part.windows
        detected += part.detected
        missed += part.missed
        false_alarms += part.false_alarms
        alarms += part.alarms
    return Tally(windows, detected, missed, false_alarms, alarms)


# -- the corpus-wide threshold -----------------------------------------------------------------


@dataclass(frozen=True)
class Best:
    """The best threshold for one profile, and the interval of thresholds that score the same."""

    profile: Profile
    threshold: float
    """The middle of ``(above, up_to]``: the choice least tied to this corpus's exact scores."""
    above: float
    up_to: float
    tally: Tally


# An event: at thresholds at or below ``value``, add these to the tally's
# (detected, missed, false_alarms, alarms).
_Event = tuple[float, float, int, float, int]


def _events(scores: Sequence[float], windows: Sequence[Window]) -> list[_Event]:
    """How one stream's tally changes as the threshold falls past each of its scores."""
    start = probation(len(scores))
    events: list[_Event] = [
        (scores[row], 0.0, 0, false_alarm_cost(previous, row), 1)
        for row, previous in _rows_outside(windows, start, len(scores))
    ]
    for window in windows:
        # As the threshold falls, the earliest detection moves to each earlier row whose score
        # beats every score before it in the window: those rows' rewards are the steps.
        records: list[tuple[float, float]] = []
        for row in range(max(window.first, start), window.last + 1):
            if not records or scores[row] > records[-1][0]:
                records.append((scores[row], detection_reward(window, row)))
        later: float | None = None  # the reward of the record before this one, from the top
        for value, reward in reversed(records):
            if later is None:
                events.append((value, reward, -1, 0.0, 0))  # the window is found at all
            else:
                events.append((value, reward - later, 0, 0.0, 0))
            later = reward
    return events


@dataclass(frozen=True)
class Steps:
    """One stream's tally as a function of the threshold, read from its scores once.

    A threshold can then be chosen, and a stream scored, on any subset of a corpus without
    reading a score again (as cross-validation does, once per fold): the cost is the number
    of distinct scores, not of rows.
    """

    windows: int
    events: tuple[_Event, ...]
    """One per distinct score, highest first: what the tally gains at thresholds at or below."""

    def at(self, threshold: float) -> Tally:
        """The stream's tally at ``threshold`` (the same as :func:`tally` of its scores)."""
        return _tally_of(self.windows, (e for e in self.events if e[0] >= threshold))


def steps(scores: Sequence[float], windows: Sequence[Window]) -> Steps:
    """Read one stream's scores into :class:`Steps` (one pass over its rows)."""
    by_value: dict[float, _Event] = {}
    for event in _events(scores, windows):
        value, detected, missed, false_alarms, alarms = event
        if value in by_value:
            _, more_detected, more_missed, more_false, more_alarms = by_value[value]
            event = (
                value,
                detected + more_detected,
                missed + more_missed,
                false_alarms + more_false,
                alarms + more_alarms,
            )
        by_value[value] = event
    return Steps(len(windows), tuple(sorted(by_value.values(), key=lambda e: -e[0])))


def _tally_of(windows: int, events: Iterable[_Event]) -> Tally:
    detected = false_alarms = 0.0
    missed, alarms = windows, 0
    for _, add_detected, add_missed, add_false, add_alarms in events:
        detected += add_detected
        missed += add_missed
        false_alarms += add_false
        alarms += add_alarms
    return Tally(windows, detected, missed, false_alarms, alarms)


def best_of(parts: Iterable[Steps], profiles: Sequence[Profile] = PROFILES) -> dict[str, Best]:
    """For each profile, the one threshold that scores best over all the streams' ``parts``.

    Exact: the tally changes only where the threshold passes a score, so it sweeps every
    distinct score from the top down rather than a grid.
    """
    events: list[_Event] = []
    windows = 0
    for part in parts:
        events.extend(part.events)
        windows += part.windows
    events.sort(key=lambda event: -event[0])
    current = Tally(windows, 0.0, windows, 0.0)
    top = events[0][0] if events else 0.0
    silent = (top + 1.0) / 2.0 if top < 1.0 else math.inf
    best = {p.name: Best(p, silent, top, silent, current) for p in profiles}
    index = 0
    while index < len(events):
        value = events[index][0]
        detected, missed = current.detected, current.missed
        false_alarms, alarms = current.false_alarms, current.alarms
        while index < len(events) and events[index][0] == value:
            _, add_detected, add_missed, add_false, add_alarms = events[index]
            detected += add_detected
            missed += add_missed
            false_alarms += add_false
            alarms += add_alarms
            index += 1
        current = Tally(windows, detected, missed, false_alarms, alarms)
        below = events[index][0] if index < len(events) else value
        for profile in profiles:
            if current.raw(profile) > best[profile.name].tally.raw(profile) + 1e-12:
                best[profile.name] = Best(profile, (value + below) / 2.0, below, value, current)
    return best


def best_thresholds(
    scored: Iterable[tuple[Sequence[float], Sequence[Window]]],
    profiles: Sequence[Profile] = PROFILES,
) -> dict[str, Best]:
    """For each profile, the one threshold that scores best over all the ``(scores, windows)``
    (O(n log n) in the rows)."""
    return best_of((steps(scores, windows) for scores, windows in scored), profiles)


def at_threshold(
    scored: Iterable[tuple[Sequence[float], Sequence[Window]]],
    threshold: float,
    profiles: Sequence[Profile] = PROFILES,
) -> dict[str, Best]:
    """Every profile scored at one given threshold (as a held-out set is scored)."""
    total = combine(tally(scores, windows, threshold) for scores, windows in scored)
    return {p.name: Best(p, threshold, threshold, threshold, total) for p in profiles}
