"""The Celery app: queues named by workload, reliability settings, the beat schedule.

A composition root: it reads settings once. Broker: Redis in production, kombu's
filesystem transport (files under ``var/broker``) by default, so ``make run`` needs no
server. Correctness never depends on the broker: state lives in the database and the
sweeper re-publishes anything a broker dropped (CEL-08, DUR-03).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from mailgate.settings import Settings, load_settings

# Every queue a task is routed to; `mailgate worker` listens on all of them by default.
QUEUES = ("ingest", "fanout", "outbound", "questions", "digests", "notices", "maintenance")
DIGEST_TICK_SECONDS = 300.0
QUESTIONS_TICK_SECONDS = 60.0
SWEEP_SECONDS = 15.0
VISIBILITY_TIMEOUT = 3600  # longer than any task run or retry delay (CEL-03)
MAX_RETRY_DELAY = 600
EMBEDDED_TRANSPORT = "worker.file_broker:Transport"
# A post's first send batch (``mailgate.delivery.FIRST_BATCH``) is published here rather
# than on ``outbound``: the worker takes from its queues in turn, so a new post's first
# copies wait for at most one task, not for every batch of the posts before it.
FIRST_BATCH_QUEUE = "fanout"


def celery_config(settings: Settings) -> dict[str, Any]:
    # beat keeps its schedule file under var/, which a fresh production host (Redis
    # broker, secret from the environment) may not have yet.
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_ignore_result": True,  # CEL-10: state lives in our database
        "result_backend": None,
        "task_acks_late": True,  # CEL-01
        "task_reject_on_worker_lost": True,  # CEL-02
        "worker_prefetch_multiplier": 1,  # CEL-04
        "task_time_limit": 300,  # CEL-06
        "task_soft_time_limit": 240,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": "ingest",
        "task_routes": {
            "mailgate.ingest": {"queue": "ingest"},
            "mailgate.send_notice": {"queue": "notices"},
            # Fan-out, copies and question mails each have a queue: a worker takes from
            # its queues in turn, so a backlog of one never holds the others up (the
            # soak saw sends wait behind queued fan-outs when they shared one).
            "mailgate.fanout": {"queue": "fanout"},
            "mailgate.send": {"queue": "outbound"},
            "mailgate.sweep": {"queue": "maintenance"},
            "mailgate.digest_tick": {"queue": "maintenance"},
            "mailgate.digests": {"queue": "digests"},
            "mailgate.questions_tick": {"queue": "maintenance"},
            "mailgate.send_question_mails": {"queue": "questions"},
        },
        "beat_schedule": {
            "sweep": {"task": "mailgate.sweep", "schedule": SWEEP_SECONDS},
            "digests": {"task": "mailgate.digest_tick", "schedule": DIGEST_TICK_SECONDS},
            "questions": {"task": "mailgate.questions_tick", "schedule": QUESTIONS_TICK_SECONDS},
        },
        "beat_schedule_filename": str(settings.var_dir / "celerybeat-schedule"),
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
    }
    if settings.broker_is_embedded:
        folder = settings.var_dir / "broker"
        for sub in ("queue", "control", "claimed", "bad", "doorbells"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # kombu's filesystem transport, with atomic publish, bad files set aside instead
        # of stopping the worker, and doorbell wake-ups (issue 12, item 5).
        conf["broker_transport"] = EMBEDDED_TRANSPORT
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "claim_folder": str(folder / "claimed"),
            "bad_folder": str(folder / "bad"),
            "doorbell_folder": str(folder / "doorbells"),
            "store_processed": False,
            # Publishes and acks ring the consumer's doorbell: this poll only covers a
            # ring that never came (a writer that does not ring), so kombu's own default.
            "polling_interval": 1.0,
        }
    else:
        conf["broker_transport_options"] = {"visibility_timeout": VISIBILITY_TIMEOUT}
        # Publishing must not hang a gateway when Redis is down: fail fast, the sweeper
        # publishes again later.
        conf["broker_transport_options"].update(
            {"max_retries": 1, "socket_connect_timeout": 2, "socket_timeout": 5}
        )
    return conf


def make_app(settings: Settings, *, with_tasks: bool = True) -> Celery:
    """The Celery app. The scheduler builds it ``with_tasks=False``: beat sends tasks by
    name and need not import (and hold in memory) the whole mailgate stack."""
    app = Celery("mailgate", include=["worker.tasks"] if with_tasks else [])
    app.conf.update(celery_config(settings))
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0.2}
    return app


settings = load_settings()
app = make_app(settings)
