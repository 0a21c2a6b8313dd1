"""The Celery settings the reliability argument rests on (CEL-01..06, CEL-10)."""

from __future__ import annotations

from pathlib import Path

from mailgate.delivery import retry_delay
from mailgate.settings import load_settings
from worker.app import MAX_RETRY_DELAY, QUEUES, VISIBILITY_TIMEOUT, celery_config


def config(tmp_path: Path, broker: str) -> dict:  # type: ignore[type-arg]
    env = {"MAILGATE_VAR_DIR": str(tmp_path), "MAILGATE_BROKER_URL": broker}
    return celery_config(load_settings(env))


def test_reliability_settings(tmp_path: Path) -> None:
    conf = config(tmp_path, "redis://127.0.0.1:6379/0")
    assert conf["task_acks_late"] is True  # CEL-01
    assert conf["task_reject_on_worker_lost"] is True  # CEL-02
    assert conf["worker_prefetch_multiplier"] == 1  # CEL-04
    assert conf["task_time_limit"] > conf["task_soft_time_limit"] > 0  # CEL-06
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert conf["task_ignore_result"] is True and conf["result_backend"] is None  # CEL-10
    # CEL-03: nothing waits in the broker longer than its visibility timeout.
    assert conf["broker_transport_options"]["visibility_timeout"] == VISIBILITY_TIMEOUT
    assert MAX_RETRY_DELAY < VISIBILITY_TIMEOUT
    assert conf["task_time_limit"] < VISIBILITY_TIMEOUT
    # Long relay retries are scheduled in the database, not in the broker.
    assert retry_delay(50).total_seconds() <= 3600


def test_every_task_has_a_queue_and_beat_sweeps(tmp_path: Path) -> None:
    conf = config(tmp_path, "redis://127.0.0.1:6379/0")
    from worker.tasks import KNOWN_TASKS

    assert set(KNOWN_TASKS) <= set(conf["task_routes"])
    assert conf["beat_schedule"]["sweep"]["task"] == "mailgate.sweep"


def test_a_default_worker_consumes_every_routed_queue(tmp_path: Path) -> None:
    """A queue nobody consumes strands its tasks silently: ``mailgate worker`` (and so the
    Procfile and the embedded run) must listen on every queue a task is routed to."""
    from mailgate.cli import worker_cmd

    conf = config(tmp_path, "redis://127.0.0.1:6379/0")
    routed = {route["queue"] for route in conf["task_routes"].values()}
    (option,) = [p for p in worker_cmd.params if p.name == "queues"]
    assert set(str(option.default).split(",")) == routed == set(QUEUES)
    # Copies, fan-outs and question mails do not queue behind one another.
    routes = conf["task_routes"]
    queues = [routes[t]["queue"] for t in ("mailgate.fanout", "mailgate.send")]
    assert len({*queues, routes["mailgate.send_question_mails"]["queue"]}) == 3


def test_embedded_broker_keeps_its_files_under_var(tmp_path: Path) -> None:
    conf = config(tmp_path, "")
    assert conf["broker_url"] == "filesystem://"
    options = conf["broker_transport_options"]
    assert (
        options["data_folder_in"]
        == options["data_folder_out"]
        == str(tmp_path / "broker" / "queue")
    )
    assert (tmp_path / "broker" / "queue").is_dir()


def test_a_fresh_host_gets_its_var_folder_for_the_beat_schedule(tmp_path: Path) -> None:
    """Production shape on a fresh host: Redis broker, secret from the environment, no
    var/ yet. beat writes its schedule there, so the folder must exist."""
    var = tmp_path / "not" / "there"
    env = {
        "MAILGATE_VAR_DIR": str(var),
        "MAILGATE_BROKER_URL": "redis://127.0.0.1:6379/0",
        "MAILGATE_SECRET_KEY": "s" * 40,
    }
    conf = celery_config(load_settings(env))
    assert Path(conf["beat_schedule_filename"]).parent == var and var.is_dir()
    assert conf["beat_schedule"]["questions"]["task"] == "mailgate.questions_tick"
