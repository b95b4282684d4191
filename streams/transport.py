"""The worker's Kafka transport: Faust's aiokafka driver with its fetch wait made a setting.

Registered in Faust's transport registry under the URL scheme :data:`SCHEME`, so the app selects it
with ``broker="haochaping+kafka://host:port"`` exactly as it would select ``kafka://`` (Faust's
supported extension point: ``faust.transport.drivers.TRANSPORTS``, which maps a broker URL's scheme to
a transport class). Everything not named below is Faust's own driver, unchanged.

1. (Withdrawn.) An earlier version also replaced Faust's ``Consumer._drain_messages`` to await each
   record's callback directly instead of through ``wait_first(callback, suspend_flow.wait())``; it
   was faster, but the fault drill "two workers, kill one" lost records with it (a callback that a
   rebalance cannot interrupt), and passed with Faust's own loop. Correctness first: Faust's loop stays.
2. ``fetch_max_wait_ms``. Faust's driver hard-codes 1,500 ms: a partition that has less than
   ``fetch_min_bytes`` waiting answers only after 1.5 s, which is the latency of a quiet stream.
   :class:`ConsumerThread` builds the aiokafka consumer with ``streams.fetch_max_wait_ms`` (read from
   the app's config attribute :data:`FETCH_MAX_WAIT_ATTR`).

The integration test ``tests/streams/test_transport.py`` starts a worker on this scheme and checks
both the setting and the flow; the fault drills run the worker on it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import ConsumerT

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


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[ConsumerT]] = Consumer
    driver_version = f"haochaping+{faust_aiokafka.Transport.driver_version}"


def fetch_max_wait_ms(app: Any) -> int:
    return int(getattr(app.conf, FETCH_MAX_WAIT_ATTR, DEFAULT_FETCH_MAX_WAIT_MS))


def register() -> None:
    """Make ``haochaping+kafka://`` a Faust broker URL scheme (idempotent)."""
    drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"


register()
