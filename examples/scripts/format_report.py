"""Step 3 of python_only_workflow.yaml: a short text report of the two earlier steps."""

number_data = context.get("number_data") or {}  # noqa: F821 -- injected by python/execute
sum_data = context.get("sum_data") or {}  # noqa: F821

numbers = number_data.get("numbers", [])
lines = [
    "Number report",
    "=============",
    f"numbers: {', '.join(str(n) for n in numbers)} ({number_data.get('count', len(numbers))})",
    f"sum:     {sum_data.get('sum')}",
    f"average: {sum_data.get('average')}",
]
report = "\n".join(lines)

print(report)  # noqa: T201 -- stdout is the task's output
result = {"report": report, "success": True}
