"""Step 1 of python_only_workflow.yaml: make five numbers.

Deterministic: the same ``context["seed"]`` (default 7) always gives the same numbers, so a
re-run of the task produces the same output.
"""

import random

seed = context.get("seed", 7)  # noqa: F821 -- `context` is injected by python/execute
rng = random.Random(seed)
numbers = [rng.randint(1, 100) for _ in range(5)]

print(f"generated {len(numbers)} numbers with seed {seed}")  # noqa: T201 -- stdout is the task's output
result = {"numbers": numbers, "count": len(numbers)}
