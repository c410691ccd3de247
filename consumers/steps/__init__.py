"""The consumer's processing steps, chained: decoding -> batching -> flushing -> committing.

Every step has the same contract (getsentry/arroyo's, with asyncio):
- ``submit(item)`` takes the previous step's output; it never blocks (work starts as a task). A step that
  cannot take an item now raises :class:`MessageRejected` (backpressure, as in arroyo) and keeps nothing of it:
  the caller still owns the item and submits it again after a later ``poll()``, or after ``join()`` returned True
  (the step is then idle and accepts it);
- ``poll()`` moves finished work on to the next step, without blocking; it raises a step's fatal error;
- ``await join(timeout)`` finishes everything submitted, down the chain (flush and commit included); it
  returns False when ``timeout`` passed first;
- ``close()`` drops what is in flight (abort: nothing of it is committed, so it is delivered again);
- ``held()`` counts the messages held by this step and the ones after it (backpressure).
A fresh chain is built for every assignment (:mod:`auditlogkit.consumers.processor`); the items are the typed values below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from auditlogkit.consumers.decode.decoder import Chunk, DecodedChunk
from auditlogkit.consumers.partition import PartitionState

T_contra = TypeVar("T_contra", contravariant=True)


class MessageRejected(Exception):
    """Raised by :meth:`Step.submit` when the step cannot take the item now (the caller keeps it and retries)."""


class Step(Protocol[T_contra]):
    def submit(self, item: T_contra) -> None: ...
    def poll(self) -> None: ...
    async def join(self, timeout: float) -> bool: ...
    def close(self) -> None: ...
    def held(self) -> int: ...


@dataclass(slots=True, frozen=True)
class Fetched:
    """Records of one partition from one fetch, in offset order (aiokafka ``ConsumerRecord`` objects)."""

    state: PartitionState
    records: list[Any]


@dataclass(slots=True, frozen=True)
class Decoded:
    """A :class:`Fetched` run cut into chunks and decoded, one result per chunk."""

    state: PartitionState
    records: list[Any]
    chunks: list[Chunk]
    results: list[DecodedChunk]
