"""How runs move on: applying task outcomes, settling dependents, dispatching what is ready.

Shared by the resolver (which applies every outcome) and the monitor's reconciler (which
re-drives what a crash left between two writes); both only ever take idempotent,
compare-and-set steps, so any number of them may act on one run at once.
"""

from stellwerk.core.progress._apply import Progress
from stellwerk.core.progress._cancel import CANCELLED_ERROR, CancelledRuns, Canceller
from stellwerk.core.progress._dispatcher import Dispatcher, resolve_params
from stellwerk.core.progress._large import LargeValues
from stellwerk.core.progress._outcome import Outcome, decode_outcome, unreadable_outcome
from stellwerk.core.progress._restart import Restarter
from stellwerk.core.progress._strategies import handoff_unfinished

__all__ = [
    "CANCELLED_ERROR",
    "CancelledRuns",
    "Canceller",
    "Dispatcher",
    "LargeValues",
    "Outcome",
    "Progress",
    "Restarter",
    "decode_outcome",
    "handoff_unfinished",
    "resolve_params",
    "unreadable_outcome",
]
