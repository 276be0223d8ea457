"""Step 2 of python_only_workflow.yaml: sum and average of ``context["numbers"]``."""

numbers = context.get("numbers")  # noqa: F821 -- `context` is injected by python/execute
if not isinstance(numbers, list) or not all(
    isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
):
    raise SystemExit(f"context['numbers'] must be a list of numbers, got {numbers!r}")

total = sum(numbers)
average = total / len(numbers) if numbers else 0
print(f"sum of {len(numbers)} numbers is {total}")  # noqa: T201 -- stdout is the task's output
result = {"sum": total, "average": average, "input_count": len(numbers)}
