"""Writing to the store: the one inserter thread and the first-write guard that keeps the first copy of an event."""
