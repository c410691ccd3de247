"""Kafka beyond the consumer loop: the dead-letter topic, whole-topic reads, and watermark checks against the log."""
