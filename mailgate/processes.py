"""Processes: start the gateway, the workers and the scheduler (composition roots).

Input: settings. Output: running processes. ``run_all`` is ``make run``: it migrates the
database, prints the status, then supervises ``mailgate serve``, ``mailgate worker`` and
``mailgate beat`` as child processes and stops them all when one exits or on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

from mailgate.settings import Settings, SettingsError

log = logging.getLogger("mailgate.processes")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The gateway's STARTTLS context, when a certificate is configured (SMTP-11)."""
    if settings.tls_cert_file is None:
        return None
    if settings.tls_key_file is None:
        raise SettingsError("MAILGATE_TLS_CERT is set but MAILGATE_TLS_KEY is not")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def warn_about_settings(settings: Settings) -> None:
    """Settings that work but quietly do less than expected, said once at start-up."""
    warning = settings.one_click_warning()
    if warning:
        # ``mailgate run`` starts ``serve`` as a child: its output shows this too.
        log.warning("mailgate: warning: %s", warning)


def serve(settings: Settings, *, ready: threading.Event | None = None) -> None:
    """Run the SMTP gateway until SIGINT/SIGTERM."""
    from mailgate.db import make_engine, make_sessionmaker
    from mailgate.inbox import SqlInbox
    from mailgate.smtp import GatewayController, GatewayHandler, Limits
    from worker.runtime import publish_ingest

    warn_about_settings(settings)
    factory = make_sessionmaker(make_engine(settings.database_url))
    inbox = SqlInbox(factory, publish=publish_ingest)
    after_commit = None
    if settings.failpoint == "after-commit":

        def after_commit(raw_id: int) -> None:  # DUR-01 crash test: die before the 250
            os._exit(137)

    handler = GatewayHandler(
        inbox,
        domain=settings.domain,
        secrets=(settings.secret_key,),
        limits=Limits(
            max_message_size=settings.max_message_size,
            max_recipients=settings.max_recipients,
            max_received=settings.max_received_headers,
        ),
        after_commit=after_commit,
    )
    controller = GatewayController(
        handler,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        trusted_peers=settings.trusted_peers,
        server_name=settings.domain,
        tls_context=tls_context(settings),
        tls_for_loopback=settings.tls_for_loopback,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    controller.start()
    print(
        f"mailgate: SMTP gateway listening on {settings.smtp_host}:{settings.smtp_port}", flush=True
    )
    http = None
    if settings.base_url:
        # RFC 8058 one-click unsubscribe, served beside the gateway when links exist.
        from mailgate.unsubscribe_http import make_server, unsubscribe_app_over

        app = unsubscribe_app_over(factory, (settings.secret_key,))
        http = make_server(app, settings.smtp_host, settings.http_port)
        print(f"mailgate: one-click unsubscribe on {settings.smtp_host}:{http.port}", flush=True)
    if ready is not None:
        ready.set()
    try:
        stop.wait()
    finally:
        controller.stop()
        if http is not None:
            http.shutdown()


def worker(settings: Settings, concurrency: int, queues: str, loglevel: str) -> None:
    from worker.app import app

    app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--queues={queues}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def beat(settings: Settings, loglevel: str) -> None:
    from worker.app import make_app

    make_app(settings, with_tasks=False).start(["beat", f"--loglevel={loglevel}"])


def run_all(settings: Settings, *, concurrency: int = 2) -> int:
    """Start gateway, worker and scheduler; stop them all when one stops."""
    exe = [sys.executable, "-m", "mailgate.cli"]
    commands: dict[str, list[str]] = {
        "smtp": [*exe, "serve"],
        "worker": [*exe, "worker", "--concurrency", str(concurrency)],
        "beat": [*exe, "beat"],
    }
    children: dict[str, subprocess.Popen[Any]] = {}
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, argv in commands.items():
        children[name] = subprocess.Popen(argv)
        print(f"mailgate: started {name} (pid {children[name].pid})", flush=True)
    code = 0
    try:
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"mailgate: {name} exited with {child.returncode}; stopping", flush=True)
                    code = child.returncode or 1
                    stopping = True
                    break
            time.sleep(0.5)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
    return code
