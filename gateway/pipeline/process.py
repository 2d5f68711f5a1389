"""The rules stage in a process of its own (`daemon.rules_process = true`).

Recognition is the daemon's heaviest CPU work, and one Python process uses one core at most:
with the doors and the delivery workers in the daemon, the rules stage competes with them for
that core. As a child of the daemon (`gateway.children`) it gets a core of its own, like
Postfix's cleanup beside qmgr and smtp. The daemon forwards it a `wake` for every accepted
message and a `reload` when it takes a new configuration (the child reads the file again); the
child sends `wake` when it has queued documents, which starts the delivery workers at once.
Its work is crash-safe per batch, so a child killed mid-batch leaves the batch to its successor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable

import structlog

from gateway import children, config
from gateway.logging import configure as configure_logging
from gateway.pipeline.runner import PipelineRunner, recognition_options
from gateway.store.db import Store, open_store

log = structlog.get_logger(__name__)

NAME = "rules-stage"


def pool(settings: config.Settings, wake: Callable[[], None]) -> children.ChildPool:
    """One rules-stage child; its `wake` (documents queued) calls `wake` in the daemon."""
    return children.ChildPool(NAME, __name__, 1, settings, wake)


def runner(store: Store, settings: config.Settings, on_queued: asyncio.Event) -> PipelineRunner:
    """The rules stage as the configuration describes it, in the daemon or in a child."""
    return PipelineRunner(
        store,
        settings.delivery,
        on_queued,
        recognition_options(settings.recognition, settings.source),
        settings.rules,
        settings.mime,
    )


def configure(pipeline: PipelineRunner, settings: config.Settings) -> None:
    """Take a reloaded configuration's rules, recognition and delivery settings; a bad UBL
    schema folder raises `ConfigError` and changes nothing."""
    recognition = recognition_options(settings.recognition, settings.source)
    pipeline.delivery = settings.delivery
    pipeline.recognition = recognition
    pipeline.rules = tuple(settings.rules)


async def serve(
    settings: config.Settings, link: children.Link, fds: list[int], stop: asyncio.Event
) -> None:
    """The child: the rules stage until it must stop; a batch under way is finished by its
    thread before the process exits (or, if killed, done again by the next child)."""
    # Intake comes first: the doors answer clients waiting for their 250.
    children.lower_background_priority()
    store = open_store(settings.database.url, settings.blob_dir, settings.database.busy_timeout)
    pipeline = runner(store, settings, children.Forward(link.poke))
    reloads: set[asyncio.Task[None]] = set()

    def received(record: str) -> None:
        if record == children.WAKE:
            pipeline.wake.set()
        elif record == children.RELOAD:
            task = asyncio.create_task(_reload(pipeline, settings.source))
            reloads.add(task)
            task.add_done_callback(reloads.discard)
        else:
            log.warning("rules_stage_record_unknown", record=record[:80])

    link.received = received
    work = asyncio.create_task(pipeline.run(), name="pipeline")
    log.info("rules_stage_ready", pid=os.getpid())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([work, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if work.done():
        work.result()  # the runner crashed: so does the child, loudly, and another starts
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    log.info("rules_stage_stopped", pid=os.getpid())


async def _reload(pipeline: PipelineRunner, source: str) -> None:
    """The daemon took a new configuration from `source`: take it too."""
    try:
        new = await asyncio.to_thread(config.load, source)
        await asyncio.to_thread(configure, pipeline, new)
    except config.ConfigError as exc:
        log.error("reload_refused", error=str(exc))
        return
    configure_logging(new.gateway.log_level, new.gateway.log_format)
    log.info("reloaded", source=source)


if __name__ == "__main__":
    sys.exit(children.main(__name__, "rules_stage", serve))
