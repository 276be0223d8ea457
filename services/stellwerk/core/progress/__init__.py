"""How runs move on: applying task outcomes, settling dependents, dispatching what is ready.

Shared by the resolver (which applies every outcome) and the monitor's reconciler (which
re-drives what a crash left between two writes); both only ever take idempotent,
compare-and-set steps, so any number of them may act on one run at once.
"""

from stellwerk.core.progress._apply import Outcome, Progress
from stellwerk.core.progress._dispatcher import Dispatcher, resolve_params

__all__ = ["Dispatcher", "Outcome", "Progress", "resolve_params"]
