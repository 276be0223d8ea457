"""The executor service: runs task attempts dispatched by the resolver."""
