"""``collapse_repeats``: a storm of the same record reaches the server as two records.

The same error logged a thousand times a second would otherwise cost a thousand requests a
second and fill the server with copies. Records are *repeats* when they come from the same
logger, level, place in the code (``pathname``, ``lineno``), message template (``msg``, before
its arguments) and exception type. The first of a kind is sent as usual and opens a *window*
of ``collapse_repeats`` seconds; repeats within it are not sent but folded into a *run*. When
the window ends (or ``flush()``/``close()`` asks), the run becomes one *summary*: its last
record as it was logged (message, arguments, traceback), with ``<prefix>repeats`` (how many
records it stands for, itself included) and ``<prefix>repeats_first`` (the ``created`` of the
first of them). The next repeat after the window is sent as usual again and opens a new one;
a run that a flush() ended leaves its window open, and later repeats in it fold into a new run.
A summary goes after every record older than it (the first of its kind among them), and so after
records logged later than the repeats it stands for; its ``<prefix>seq`` is its first repeat's.

Folding happens where records leave the memory buffer, on the handler's own threads (the
delivery worker, or the spool's writer): ``emit()`` costs what it did, and a folded record is
never mapped, its traceback never formatted. Windows are timed on the handler's clock when a
record leaves the buffer, which is within milliseconds of the log call unless a backlog has
formed (then more of it folds). A folded record stays the handler's until its summary's fate is
decided, and is counted as the summary is (sent, failed, dropped): the ``Folder`` is a stage of
the ledger while it holds it, and a summary is a batch of its own whose ``weight`` is the
records it stands for.

Pure: no I/O. Every method but ``kind_of`` is called with the ledger's lock held.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

from ._buffer import Taken
from ._clock import Clock
from ._mapping import ExceptionCapture

#: Kinds whose windows are kept at most: beyond it, the oldest window ends early (its run's
#: summary goes), so that a flood of different messages cannot make the folder grow without
#: bound. Each open run keeps one record (its last) in memory, and each waiting summary one.
MAX_KINDS = 1000

Kind = Tuple[Hashable, ...]


def kind_of(item: Any) -> Optional[Kind]:
    """What makes records repeats of each other; None for a record that is never folded (a
    user's ``mapLogRecord`` result without these fields, or with values that cannot be
    compared)."""
    if type(item) is not dict:
        return None
    try:
        kind = (
            item["name"], item["levelno"], item["pathname"], item["lineno"], item["msg"],
            _exception_type(item.get("exc_info")),
        )
        hash(kind)
    except (KeyError, TypeError):
        return None
    return kind


def _exception_type(exc_info: Any) -> Hashable:
    if exc_info is None:
        return None
    if type(exc_info) is ExceptionCapture:
        return exc_info.type_name
    if type(exc_info) is tuple and exc_info:  # a user's mapLogRecord may keep the real one
        first: Hashable = exc_info[0]
        return first
    return exc_info if type(exc_info) is str else type(exc_info).__name__


class _Run:
    """Repeats folded so far: how many, the oldest sequence number, the first one's time, and
    the last one (what the summary will say)."""

    __slots__ = ("count", "first_created", "last", "oldest")

    def __init__(self, item: Dict[str, Any], seq: int) -> None:
        self.count = 1
        self.oldest = seq
        self.first_created = item.get("created")
        self.last = item

    def add(self, item: Dict[str, Any], seq: int) -> None:
        self.count += 1
        self.oldest = min(self.oldest, seq)
        self.last = item

    def merge(self, later: _Run) -> None:
        """A later run of the same kind, while this one's summary still waits to be sent."""
        self.count += later.count
        self.oldest = min(self.oldest, later.oldest)
        self.last = later.last


class Folder:
    """Open windows and runs per kind, and the summaries waiting to be sent.

    A stage of the ledger (``pending``/``oldest_seq``: the folded records not yet in flight),
    and a source of the delivery worker (``take_batch``: one summary a batch, weighing the
    records it stands for).
    """

    def __init__(self, window: float, prefix: str, clock: Clock,
                 max_kinds: int = MAX_KINDS) -> None:
        self._window = window
        self._clock = clock
        self._max_kinds = max_kinds
        self._repeats_key = prefix + "repeats"
        self._first_key = prefix + "repeats_first"
        #: When each kind's window ends; in the order they opened, so ending soonest first
        #: (the clock never goes back and every window is as long).
        self._windows: Dict[Kind, float] = {}
        self._runs: Dict[Kind, _Run] = {}
        #: Runs that ended, waiting to be taken as summaries, oldest first.
        self._ready: Dict[Kind, _Run] = {}
        #: Records in runs and waiting summaries.
        self._held = 0
        #: Runs holding a record older than this end as soon as every such record has left
        #: the buffer and been folded: a flush() (or, for every record, close()) waits for them.
        self._force_before: float = -1

    # -- where records leave the buffer --------------------------------------------------------

    def fold(self, taken: Taken) -> Taken:
        """``taken`` without the repeats folded into runs (the same object if there were none)."""
        now = self._clock.monotonic()
        self._end_windows(now)
        items: List[Any] = []
        seqs: List[Optional[int]] = []
        windows, runs = self._windows, self._runs
        for item, seq in zip(taken.items, taken.seqs):
            kind = kind_of(item)
            if kind is not None and seq is not None:
                if kind in windows:
                    run = runs.get(kind)
                    if run is None:
                        runs[kind] = _Run(item, seq)
                    else:
                        run.add(item, seq)
                    self._held += 1
                    continue
                self._open_window(kind, now)
            items.append(item)
            seqs.append(seq)
        if len(items) == len(taken.items):
            return taken
        return Taken(items, seqs, prepared=taken.prepared)

    def _open_window(self, kind: Kind, now: float) -> None:
        if len(self._windows) >= self._max_kinds:
            oldest = next(iter(self._windows))
            del self._windows[oldest]
            self._end_run(oldest)
        self._windows[kind] = now + self._window

    def _end_windows(self, now: float) -> None:
        windows = self._windows
        while windows:
            kind, ends = next(iter(windows.items()))
            if ends > now:
                return
            del windows[kind]
            self._end_run(kind)

    def _end_run(self, kind: Kind) -> None:
        run = self._runs.pop(kind, None)
        if run is None:
            return
        waiting = self._ready.get(kind)
        if waiting is None:
            self._ready[kind] = run
        else:
            waiting.merge(run)

    # -- the delivery worker's timer and flush() -----------------------------------------------

    def end_due_runs(self, unfolded: Optional[int]) -> None:
        """End the runs whose window has passed, and those a flush() or close() waits for once
        no record it waits for is still to be folded (``unfolded``: the oldest record not yet
        out of the buffer, if any): a backlog folds into one run, not one run per batch."""
        self._end_windows(self._clock.monotonic())
        if self._forcing(unfolded):
            for kind in [k for k, run in self._runs.items() if run.oldest < self._force_before]:
                self._end_run(kind)

    def _forcing(self, unfolded: Optional[int]) -> bool:
        return self._force_before >= 0 and (unfolded is None or unfolded >= self._force_before)

    def force(self, before_seq: float) -> None:
        """A flush() waits for every record older than ``before_seq``: end their runs."""
        self._force_before = max(self._force_before, before_seq)

    def next_due(self, unfolded: Optional[int]) -> Optional[float]:
        """When the next run ends on the clock; None if none is open."""
        runs = self._runs
        if not runs:
            return None
        if self._forcing(unfolded) and any(
            run.oldest < self._force_before for run in runs.values()
        ):
            return self._clock.monotonic()
        return min(self._windows[kind] for kind in runs)

    # -- the ledger's stage --------------------------------------------------------------------

    def pending(self) -> int:
        return self._held

    def oldest_seq(self) -> Optional[int]:
        oldest = [run.oldest for run in self._runs.values()]
        oldest.extend(run.oldest for run in self._ready.values())
        return min(oldest) if oldest else None

    def drop_all(self, let_go: List[object]) -> int:
        """Forget everything (the handler stops); return how many records were held. What
        held them goes to ``let_go``, for the caller to free once no lock is held."""
        held = self._held
        let_go.extend((self._runs, self._ready))
        self._windows, self._runs, self._ready = {}, {}, {}
        self._held = 0
        return held

    # -- the delivery worker's source ----------------------------------------------------------

    def has_summary_before(self, limit: Optional[int]) -> bool:
        """Whether a summary waits whose records are all older than ``limit`` (None: any):
        a summary never goes before the first record of its kind, still on disk maybe."""
        ready = self._ready
        if not ready or limit is None:
            return bool(ready)
        return any(run.oldest < limit for run in ready.values())

    def take_batch(self, max_count: int) -> Taken:
        """The oldest summary waiting, as a batch of its own. Its sequence number is the
        first repeat's: it stands for that record too, and no other record carries it."""
        if not self._ready:
            return Taken([], [])
        kind = min(self._ready, key=lambda k: self._ready[k].oldest)
        run = self._ready.pop(kind)
        self._held -= run.count
        summary = dict(run.last)
        summary[self._repeats_key] = run.count
        if run.first_created is not None:
            summary[self._first_key] = run.first_created
        return Taken([summary], [run.oldest], weight=run.count)

    def release(self, taken: Taken, settled: Sequence[int]) -> None:
        """Nothing to do: a summary in flight is counted by the ledger until it is settled."""
