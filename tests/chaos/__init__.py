"""The chaos suite of issue 3: real processes, SIGKILLs, an execution ledger, and the checks."""
