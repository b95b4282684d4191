"""What a route is given: the current principal, a ClickHouse client, the command producer, the live feed."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import AuthError, decode_token
from api.commands import CommandProducer
from api.feed import LiveFeed
from haochaping.domain.records import Actor
from haochaping.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="A token from `haochaping token` (JWT, HS256).")


class ClickHousePool:
    """Clients handed out one per request: a clickhouse-connect client must not run two queries at once."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def _new(self) -> Any:
        import clickhouse_connect

        ch = self._settings.clickhouse
        return clickhouse_connect.get_client(
            dsn=ch.url,
            database=ch.database,
            username=ch.username,
            password=ch.password.get_secret_value(),
            autogenerate_session_id=False,
            connect_timeout=5,
            send_receive_timeout=30,
        )

    def acquire(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._new()

    def release(self, client: Any) -> None:
        self._idle.put(client)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _actor_from(settings: Settings, token: str | None) -> Actor:
    if not token:
        raise HTTPException(
            401,
            detail="no token: send 'Authorization: Bearer <token>' (make one with: haochaping token --role ...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return decode_token(settings.api, token)
    except AuthError as exc:
        raise HTTPException(401, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


def current_actor(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Actor:
    return _actor_from(get_settings(request), credentials.credentials if credentials else None)


def current_actor_or_query_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    access_token: Annotated[
        str | None,
        Query(description="The token, for clients that cannot set headers (a browser's EventSource)."),
    ] = None,
) -> Actor:
    token = credentials.credentials if credentials else access_token
    return _actor_from(get_settings(request), token)


def clickhouse(request: Request) -> Iterator[Any]:
    pool: ClickHousePool = request.app.state.clickhouse
    client = pool.acquire()
    try:
        yield client
    finally:
        pool.release(client)


def producer(request: Request) -> CommandProducer:
    prod: CommandProducer = request.app.state.producer
    return prod


def live_feed(request: Request) -> LiveFeed:
    feed: LiveFeed = request.app.state.feed
    return feed


CurrentActor = Annotated[Actor, Depends(current_actor)]
StreamActor = Annotated[Actor, Depends(current_actor_or_query_token)]
ClickHouse = Annotated[Any, Depends(clickhouse)]
Producer = Annotated[CommandProducer, Depends(producer)]
Feed = Annotated[LiveFeed, Depends(live_feed)]
AppSettings = Annotated[Settings, Depends(get_settings)]
