"""The stream processor: owns the fetch loop, pause/resume and rebalances; the steps do the work.

Contract:
- On assignment it loads the partitions' :class:`~auditlogkit.consumers.fate.Watermarks` (``load_watermarks``, retried
  until it succeeds or a stop is requested), creates one :class:`~auditlogkit.consumers.partition.PartitionState` per
  partition and a fresh chain of steps (``make_strategy``); records are submitted only to it.
- On revocation it joins the chain (everything decoded is flushed and committed while the partitions are still
  ours; bounded by ``shutdown_timeout``, then closed) and drops the states. Records of partitions it has no state
  for are never submitted: it seeks back so they are fetched again by their owner.
- Backpressure: above ``max_held`` messages held by the chain fetching pauses; below half it resumes.
- :meth:`request_stop` ends the loop; the chain is joined (bounded), then closed. A fatal error raised by a step
  closes the chain, commits what was finished, and propagates.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from auditlogkit.consumers import metrics as m
from auditlogkit.consumers.fate import Watermarks
from auditlogkit.consumers.partition import PartitionState
from auditlogkit.consumers.retry import Stopping
from auditlogkit.consumers.steps import Fetched, Step
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.consumers.processor")

MakeStrategy = Callable[[dict[TopicPartition, PartitionState]], Step[Fetched]]
LoadWatermarks = Callable[[set[TopicPartition]], Awaitable[dict[TopicPartition, Watermarks]]]


class StreamProcessor(ConsumerRebalanceListener):
    def __init__(self, consumer: AIOKafkaConsumer, make_strategy: MakeStrategy, load_watermarks: LoadWatermarks, *,
                 name: str, max_poll_records: int, max_held: int, shutdown_timeout: float,
                 tick: Callable[[], None] = lambda: None) -> None:
        """``tick`` is called from the loop about once a second (gauges that age)."""
        self.consumer = consumer
        self.make_strategy = make_strategy
        self.load_watermarks = load_watermarks
        self.name = name
        self.max_poll_records = max_poll_records
        self.max_held = max_held
        self.shutdown_timeout = shutdown_timeout
        self.tick = tick
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self.paused = False
        self.held = 0
        self.most_held = 0
        self.rebalances = 0
        self._strategy: Step[Fetched] | None = None
        self._stop = False
        self._closing = False
        self._aborting = False

    def request_stop(self) -> None:
        self._stop = True

    @property
    def stopping(self) -> bool:
        return self._stop

    async def run(self) -> None:
        """Fetch and submit until :meth:`request_stop`, then join the chain. The caller stops the consumer."""
        try:
            await self._loop()
            strategy, self._strategy = self._strategy, None
            if strategy is not None:
                await self._finish(strategy)
        except BaseException:
            self._aborting = True
            strategy, self._strategy = self._strategy, None
            if strategy is not None:
                strategy.close()
                with contextlib.suppress(Exception):
                    await strategy.join(self.shutdown_timeout)  # commits what was finished
            raise
        finally:
            self._closing = True

    async def _loop(self) -> None:
        c = self.consumer
        last_tick = 0.0
        while not self._stop:
            strategy = self._strategy
            busy = strategy is not None and strategy.held() > 0
            records = await c.getmany(timeout_ms=5 if busy else 100, max_records=self.max_poll_records)
            strategy = self._strategy  # a rebalance may have run during the fetch
            for tp, recs in records.items():
                state = self.partitions.get(tp) if strategy is not None else None
                if state is None:  # revoking, or not loaded yet: never submitted; fetched again later
                    with contextlib.suppress(IllegalStateError):
                        c.seek(tp, recs[0].offset)
                    continue
                state.fetched_to = recs[-1].offset + 1
                assert strategy is not None
                strategy.submit(Fetched(state, recs))
            for tp, state in self.partitions.items():
                hw = c.highwater(tp)
                if hw is not None:
                    state.highwater = int(hw)
            if strategy is not None:
                strategy.poll()
                self._backpressure(strategy.held())
            now = time.monotonic()
            if now - last_tick >= 1.0:
                last_tick = now
                self.tick()

    def _backpressure(self, held: int) -> None:
        c = self.consumer
        self.held = held
        self.most_held = max(self.most_held, held)
        if not self.paused and held >= self.max_held:
            self.paused = True
            log.warning("consumer.paused", worker=self.name, held=held, limit=self.max_held)
        elif self.paused and held <= self.max_held // 2:
            self.paused = False
            c.resume(*c.assignment())
            log.info("consumer.resumed", worker=self.name, held=held)
        if self.paused:
            c.pause(*c.assignment())  # also partitions assigned since
        m.PAUSED.labels(self.name).set(int(self.paused))
        m.INFLIGHT.labels(self.name).set(held)

    async def _finish(self, strategy: Step[Fetched]) -> bool:
        done = await strategy.join(self.shutdown_timeout)
        if not done:
            log.warning("consumer.drain_timeout", worker=self.name, timeout_s=self.shutdown_timeout,
                        dropped_uncommitted=strategy.held())
            strategy.close()
            await strategy.join(5.0)
        return done

    # ----- rebalance (aiokafka calls these from its coordinator) ------------------------------------------
    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        strategy, self._strategy = self._strategy, None
        gone = set(revoked)
        if self._closing or not gone:
            return
        self.rebalances += 1
        t0 = time.perf_counter()
        flushed = True
        if strategy is not None:
            if self._aborting:
                strategy.close()
            else:
                flushed = await self._finish(strategy)
        for tp in list(self.partitions):
            del self.partitions[tp]
            with contextlib.suppress(KeyError):
                m.LAG.remove(tp.topic, str(tp.partition))
        log.info("consumer.rebalanced", worker=self.name, phase="revoked", partitions=sorted(tp.partition for tp in gone),
                 flushed=flushed, ms=round((time.perf_counter() - t0) * 1000, 1))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        tps = set(assigned)
        if self._closing:
            return
        t0 = time.perf_counter()
        try:
            wms = await self.load_watermarks(tps) if tps else {}
        except Stopping:
            log.info("consumer.rebalanced", worker=self.name, phase="assigned", stopping=True)
            return  # no states: nothing is submitted
        states: dict[TopicPartition, PartitionState] = {}
        for tp in tps:
            try:
                committed = await self.consumer.committed(tp)
            except Exception:  # lag only
                committed = None
            states[tp] = PartitionState(tp, wms.get(tp, Watermarks()), committed=int(committed or 0),
                                        fetched_to=int(committed or 0))
        self.partitions.clear()
        self.partitions.update(states)
        self._strategy = self.make_strategy(self.partitions)
        log.info("consumer.rebalanced", worker=self.name, phase="assigned", partitions=sorted(tp.partition for tp in tps),
                 watermarks={tp.partition: [st.watermarks.stored, st.watermarks.dead] for tp, st in states.items()},
                 ms=round((time.perf_counter() - t0) * 1000, 1))

    def lag(self) -> dict[int, int]:
        """Lag per owned partition (high watermark minus committed offset), where known."""
        return {tp.partition: v for tp, st in list(self.partitions.items()) if (v := st.lag) is not None}

    def observe_lag(self) -> dict[int, int]:
        """:meth:`lag`, also set on the lag gauges."""
        lag = self.lag()
        for tp in list(self.partitions):
            if tp.partition in lag:
                m.LAG.labels(tp.topic, str(tp.partition)).set(lag[tp.partition])
        return lag
