"""What happens to one message: the one rule that recognises a redelivery.

A partition's :class:`Watermarks` are loaded when it is assigned: the highest offset whose row is stored
(``audit_events_offsets``) and the highest source offset already on the DLQ. A message at or below the
watermark of its kind was handled before a crash or a rebalance and is skipped; every other message is
stored (valid) or dead-lettered (invalid).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Fate(Enum):
    STORE = "store"
    ALREADY_STORED = "already_stored"
    DEAD = "dead"
    ALREADY_DEAD = "already_dead"


@dataclass(slots=True, frozen=True)
class Watermarks:
    stored: int = -1  # highest offset of this partition whose row is in audit_events
    dead: int = -1  # highest offset of this partition already on the DLQ

    @property
    def below(self) -> int:
        """Every offset at or below this one was handled before (stored or dead-lettered)."""
        return min(self.stored, self.dead)


def fate(offset: int, valid: bool, wm: Watermarks) -> Fate:
    if valid:
        return Fate.ALREADY_STORED if offset <= wm.stored else Fate.STORE
    return Fate.ALREADY_DEAD if offset <= wm.dead else Fate.DEAD
