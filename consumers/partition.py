"""The state of one assigned partition: created when the partition is assigned, dropped when it is revoked.

It holds what the steps need to know about the partition: its watermarks (:mod:`auditlogkit.consumers.fate`), the open
batch, how far it has been fetched and the broker's high watermark (caught up or not), and the committed offset
(lag).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import TopicPartition

from auditlogkit.consumers.batch import PartitionBatch
from auditlogkit.consumers.fate import Watermarks


@dataclass(slots=True)
class PartitionState:
    tp: TopicPartition
    watermarks: Watermarks = field(default_factory=Watermarks)
    committed: int = 0
    fetched_to: int = -1  # next offset to fetch (last fetched + 1); -1 before the first fetch
    highwater: int | None = None
    open: PartitionBatch | None = None

    def batch(self, first: int) -> PartitionBatch:
        """The open batch, started at ``first`` when there is none."""
        if self.open is None:
            self.open = PartitionBatch(self.tp, first=first)
        return self.open

    def take(self) -> PartitionBatch | None:
        b, self.open = self.open, None
        return b

    @property
    def caught_up(self) -> bool:
        """Everything the broker has was fetched (as of the last fetch response)."""
        return self.highwater is not None and self.fetched_to >= self.highwater

    @property
    def lag(self) -> int | None:
        return None if self.highwater is None else max(0, self.highwater - self.committed)
