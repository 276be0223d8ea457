"""Task methods an executor can run.

Three kinds (:class:`MethodKind`): the built-in Gleitzeit tools (``mcp/tool.echo``, ``.add``,
``.multiply``, ``.concat``), Python functions marked with ``@stellwerk.handler`` (given to the
executor, or found in the modules it scans), and ``python/execute`` (a script from
``STELLWERK_SCRIPT_DIRS``, off unless directories are set).
:func:`build_method_table` assembles them; :meth:`MethodTable.invoke` runs one and turns every
failure into a :class:`~stellwerk.core.errors.TaskError`.
"""

from __future__ import annotations

from ._python_script import DEFAULT_SCRIPT_TIMEOUT
from ._table import PYTHON_EXECUTE, MethodInfo, MethodKind, MethodTable, build_method_table

__all__ = [
    "DEFAULT_SCRIPT_TIMEOUT",
    "PYTHON_EXECUTE",
    "MethodInfo",
    "MethodKind",
    "MethodTable",
    "build_method_table",
]
