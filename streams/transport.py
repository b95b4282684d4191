"""The worker's Kafka transport: Faust's aiokafka driver with two costs taken out.

Registered in Faust's transport registry under the URL scheme :data:`SCHEME`, so the app selects it
with ``broker="haochaping+kafka://host:port"`` exactly as it would select ``kafka://`` (Faust's
supported extension point: ``faust.transport.drivers.TRANSPORTS``, which maps a broker URL's scheme to
a transport class). Everything not named below is Faust's own driver, unchanged.

1. Per-message consumer cost. Faust's ``Consumer._drain_messages`` hands every fetched record to the
   conductor through ``wait_first(callback(msg), suspend_flow.wait())``, which creates and cancels
   several asyncio tasks *per record*; on two cores that alone capped the worker near 8k records/s
   whatever the agents did. :class:`Consumer` awaits the callback directly while the flow is active
   and falls back to Faust's ``wait_first`` only when the flow is suspended (a rebalance is under
   way). Trade-off: during normal flow, a callback blocked on a full stream buffer cannot be
   interrupted by a rebalance until the agent drains the buffer, which it does within one batch.
2. ``fetch_max_wait_ms``. Faust's driver hard-codes 1,500 ms: a partition that has less than
   ``fetch_min_bytes`` waiting answers only after 1.5 s, which is the latency of a quiet stream.
   :class:`ConsumerThread` builds the aiokafka consumer with ``streams.fetch_max_wait_ms`` (read from
   the app's config attribute :data:`FETCH_MAX_WAIT_ATTR`).

The integration test ``tests/streams/test_transport.py`` starts a worker on this scheme and checks
both the setting and the flow; a Faust upgrade that changes ``_drain_messages`` must be re-read here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar, cast

import aiokafka
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import ConsumerT
from mode import Service, ServiceT

SCHEME = "haochaping+kafka"
FETCH_MAX_WAIT_ATTR = "haochaping_fetch_max_wait_ms"
DEFAULT_FETCH_MAX_WAIT_MS = 1500  # what Faust's own driver uses


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # The attribute aiokafka's consumer hands to its Fetcher at start(); the consumer is not
        # started yet here, so this is the value every fetch request will carry.
        consumer._fetch_max_wait_ms = fetch_max_wait_ms(self.app)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - run in the worker
        # Faust 0.15.3's loop, except for the callback (see the module docstring).
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        sleep = asyncio.sleep
        yield_every = 100
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if self.flow_active:
                                await callback(message)
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[ConsumerT]] = Consumer
    driver_version = f"haochaping+{faust_aiokafka.Transport.driver_version}"


def fetch_max_wait_ms(app: Any) -> int:
    return int(getattr(app.conf, FETCH_MAX_WAIT_ATTR, DEFAULT_FETCH_MAX_WAIT_MS))


def register() -> None:
    """Make ``haochaping+kafka://`` a Faust broker URL scheme (idempotent)."""
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"


register()
