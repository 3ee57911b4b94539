"""The FastAPI application: wiring of state, storage, rules, dispatch and routers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import structlog
from fastapi import FastAPI
from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from service import clock
from service.agents import AgentDesk
from service.api import (
    agents,
    appointments,
    contacts,
    fastlane,
    health,
    outcomes,
    passes,
    performance,
    reports,
    route,
    rules,
    webhooks,
)
from service.appointments import AppointmentBook
from service.demo import demo_agents
from service.dispatch import Dispatcher
from service.events.delivery import WebhookDeliverer
from service.events.endpoints import WebhookEndpoints
from service.logging import configure_logging
from service.middleware import RequestContext
from service.outcomes import OutcomeDesk
from service.passes import PassDesk
from service.performance_store import PerformanceStore
from service.problems import install_problem_handlers
from service.rate_limits import RateLimits
from service.realtime import RealtimeKeeper
from service.routing import RoutingService
from service.rules_store import RulesStore
from service.settings import Settings
from service.state.base import RealtimeState
from service.state.memory import MemoryState
from service.state.redis_contacts import SharedContacts
from service.state.redis_holds import SharedHolds
from service.state.redis_state import RedisState
from service.storage.db import make_engine, upgrade
from service.storage.writer import BatchWriter
from simulator.service import SimulationWorker

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None, *, run_background: bool = True) -> FastAPI:
    """Build the app; `run_background=False` leaves the timer and file watcher off (tests)."""
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _start(app, settings)
        tasks: list[asyncio.Task[Any]] = []
        if run_background:
            tasks.append(
                asyncio.create_task(
                    app.state.routing.run_timer(settings.dispatch_interval_seconds), name="timer"
                )
            )
            tasks.append(asyncio.create_task(app.state.rules.watch(), name="rules-watch"))
            # Rules stored by another replica (PUT, rollback, its file) become active here too.
            tasks.append(asyncio.create_task(app.state.rules.follow(), name="rules-follow"))
            # Start the solver worker now: after a restart the first dispatch is the big one.
            tasks.append(asyncio.create_task(app.state.dispatcher.warm(), name="solver-warm"))
            tasks.append(asyncio.create_task(app.state.webhooks.run(), name="webhooks"))
            # Passes sold or changed by another replica reach this one's in-memory index.
            tasks.append(asyncio.create_task(app.state.passes.run(1.0), name="passes-refresh"))
            # The performance table follows the outcome window and other replicas' outcomes.
            tasks.append(
                asyncio.create_task(app.state.performance.run(), name="performance-refresh")
            )
            # Importing CP-SAT takes ~1.4 s: not on the first fast-lane booking's request.
            tasks.append(asyncio.create_task(app.state.appointments.warm(), name="cp-sat-warm"))
            if app.state.keeper is not None:
                # Redis may lose the shared state: notice, answer 503, rebuild, answer again.
                tasks.append(asyncio.create_task(app.state.keeper.run(), name="realtime-keeper"))
        try:
            yield
        finally:
            await _stop_tasks(tasks)
            try:
                await asyncio.wait_for(app.state.webhooks.close(), SHUTDOWN_WAIT_SECONDS)
            except TimeoutError:
                log.warning("shutdown.webhooks_close_timed_out")
            app.state.dispatcher.close()
            app.state.simulations.close()
            app.state.writer.stop()
            app.state.engine.dispose()
            if app.state.redis is not None:
                await app.state.redis.aclose()
                app.state.sync_redis.close()

    app = FastAPI(
        title="skillroute",
        version="0.1.0",
        summary="Skills-based routing and fast-lane SLA service for contact centers",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_problem_handlers(app)
    for module in (
        route,
        contacts,
        outcomes,
        agents,
        rules,
        passes,
        fastlane,
        appointments,
        webhooks,
        reports,
        performance,
        health,
    ):
        app.include_router(module.router)
    app.add_middleware(
        RequestContext, max_body_bytes=settings.max_body_bytes, log_requests=settings.log_requests
    )
    return app


SHUTDOWN_WAIT_SECONDS = 10.0


async def _stop_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel the background tasks and wait for them, bounded: a stuck one must not hang stop."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_SECONDS)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning("shutdown.task_failed", task=task.get_name(), error=repr(task.exception()))
    for task in pending:
        log.warning("shutdown.task_stuck", task=task.get_name())


async def _start(app: FastAPI, settings: Settings) -> None:
    # Built on the running loop: the in-process limit store schedules its expiry task there.
    app.state.rate_limits = RateLimits(settings)
    engine = make_engine(settings.database_url)
    await asyncio.to_thread(upgrade, settings.database_url)
    store = RulesStore(engine, rules_file=settings.effective_rules_file)
    await asyncio.to_thread(store.bootstrap)
    redis: Redis | None = None
    sync_redis: SyncRedis | None = None
    shared: SharedContacts | None = None
    holds: SharedHolds | None = None
    state: RealtimeState
    if settings.redis_url:
        # Several replicas: real-time state, live contacts and locks are shared in Redis.
        redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=settings.redis_max_connections, timeout=5
            )
        )
        state = RedisState(redis, store.compiled, prefix=settings.redis_prefix)
        shared = SharedContacts(
            redis,
            prefix=settings.redis_prefix,
            memory_seconds=settings.contact_memory_seconds,
            idempotency_window_seconds=settings.idempotency_window_seconds,
        )
        # Cancellations check holds from a worker thread: a small synchronous client.
        sync_redis = SyncRedis.from_url(settings.redis_url, max_connections=8)
        holds = SharedHolds(redis, sync_redis, prefix=settings.redis_prefix)
    else:
        state = MemoryState(store.compiled)
    writer = BatchWriter(
        engine,
        flush_interval=settings.write_flush_interval_seconds,
        batch_max=settings.write_batch_max,
    )
    writer.start()
    outcome_desk = OutcomeDesk(engine=engine, rules=store)
    performance_store = PerformanceStore(
        engine, store.compiled.ruleset.performance, write_lock=outcome_desk.write_lock
    )
    await asyncio.to_thread(performance_store.refresh)
    store.subscribe(performance_store.on_rules_changed)
    dispatcher = Dispatcher(
        state,
        reservation_ttl=settings.reservation_ttl_seconds,
        solve_time_limit=settings.solve_time_limit_seconds,
        inline_max_arcs=settings.solve_inline_max_arcs,
        performance=performance_store.book,
    )
    pass_desk = PassDesk(engine=engine, rules=store, settings=settings, shared_holds=holds)
    await pass_desk.recover()
    routing = RoutingService(
        state=state,
        dispatcher=dispatcher,
        rules=store,
        writer=writer,
        engine=engine,
        reservation_ttl=settings.reservation_ttl_seconds,
        default_handle_seconds=settings.default_handle_seconds,
        retention_seconds=settings.contact_memory_seconds,
        idempotency_window_seconds=settings.idempotency_window_seconds,
        exclusion_seconds=settings.reject_exclusion_seconds,
        passes=pass_desk,
        shared=shared,
    )
    desk = AgentDesk(routing, engine)
    store.subscribe(routing.on_rules_changed)
    store.add_veto(routing.dropped_in_use)
    app.state.engine, app.state.rules, app.state.state = engine, store, state
    app.state.writer, app.state.dispatcher = writer, dispatcher
    app.state.routing, app.state.agents = routing, desk
    app.state.passes = pass_desk
    app.state.outcomes = outcome_desk
    app.state.outcomes.listeners.append(performance_store.on_outcomes)
    app.state.performance = performance_store
    app.state.appointments = AppointmentBook(
        engine=engine,
        rules=store,
        passes=pass_desk,
        reorder_time_limit=settings.reorder_time_limit_seconds,
    )
    app.state.webhooks = WebhookDeliverer(engine, settings)
    app.state.simulations = SimulationWorker(settings.simulation_time_limit_seconds)
    app.state.webhook_endpoints = WebhookEndpoints(engine, app.state.webhooks)
    store.agent_skills = state.known_skills
    app.state.redis, app.state.sync_redis = redis, sync_redis
    app.state.keeper = None
    loaded: dict[str, int] = {"agents": 0, "contacts": 0}

    async def load() -> None:
        """Agents, then contacts (their load and offers need the agents) from the database."""
        loaded["agents"] = await desk.recover()
        if settings.demo and loaded["agents"] == 0:
            for agent_id, body in demo_agents():
                await desk.put(agent_id, body, rebuilding=True)
            loaded["agents"] = len(demo_agents())
        loaded["contacts"] = await routing.recover()
        await pass_desk.restore_holds()

    if shared is None or redis is None:
        await load()
    else:
        assert isinstance(state, RedisState)
        keeper = RealtimeKeeper(
            client=redis,
            state=state,
            contacts=shared,
            writer=writer,
            load=load,
            on_adopted=partial(routing.dispatch_all, trigger="state_rebuilt"),
            grace=settings.redis_rebuild_grace_seconds,
        )
        app.state.keeper = routing.keeper = keeper
        try:
            await keeper.start()
        except RedisError as exc:
            # Not ready (503) until Redis answers; the keeper's loop builds or adopts it then.
            keeper.problem = f"Redis: {type(exc).__name__}: {exc}"[:300]
            log.warning("service.redis_unavailable", error=keeper.problem)
    await routing.load_ledger()
    # Passes of contacts answered just before a crash, whose consumption was lost (every
    # process at its start: with shared state, the state itself may have outlived the crash).
    await pass_desk.settle_answered(clock.now())
    if app.state.keeper is None or app.state.keeper.ready:
        await routing.dispatch_all(trigger="startup")
    agents_loaded, contacts_recovered = loaded["agents"], loaded["contacts"]
    log.info(
        "service.started",
        rules_version=store.active.row.version,
        agents=agents_loaded,
        contacts_recovered=contacts_recovered,
        database=settings.database_url.split("://")[0],
        realtime_state="redis" if shared is not None else "memory",
        demo=settings.demo,
    )
