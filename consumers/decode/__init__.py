"""Decoding: bytes -> rows in ClickHouse Native blocks or dead letters, in this process or in helper processes."""
