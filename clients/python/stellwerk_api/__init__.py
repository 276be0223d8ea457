"""Generated from protos/ by `make proto` (scripts/gen_protos.py); never edit by hand.

One subpackage per contract area: workflow (WorkflowService), execution (ExecutorService),
monitoring (MonitorService), events (the messages on JetStream)."""
