"""The shared core of Stellwerk: model, errors, NATS plumbing, settings."""
