"""``python manage.py motia_worker``: the project's workers and cron inside Django (handlers can use the ORM)."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from motia_py.errors import MotiaError


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type information
    """Run motia-py workers with this Django project's settings configured."""

    help = ("Run the workers and cron of the motia-py project in settings.MOTIA_PY_PROJECT until SIGINT/SIGTERM, "
            "with Django set up so that handlers can use the ORM. Example: python manage.py motia_worker --no-cron")

    def add_arguments(self, parser: Any) -> None:
        """``--project``, ``--backend``, ``--no-cron``, ``--http``."""
        parser.add_argument("--project", default=None, metavar="DIR",
                            help="The motia-py project (default: settings.MOTIA_PY_PROJECT, else the current "
                                 "directory).")
        parser.add_argument("--backend", dest="backend_url", default=None, metavar="URL",
                            help="Backend URL (default: settings.MOTIA_PY_BACKEND_URL, else the project's).")
        parser.add_argument("--no-cron", action="store_true", help="Do not fire cron steps in this process.")
        parser.add_argument("--http", action="store_true",
                            help="Also serve the project's API steps on [server] host and port.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run until stopped; a motia-py error becomes a CommandError (exit 1)."""
        from motia_py.django import run_worker

        try:
            code = run_worker(options["project"], cron=not options["no_cron"], http=options["http"],
                              backend_url=options["backend_url"])
        except MotiaError as exc:
            raise CommandError(str(exc)) from exc
        from motia_py.executor import sync_handlers_running

        stuck = sync_handlers_running()
        if stuck:  # Python would wait for their threads at exit; their events were handed back already
            self.stderr.write(f"warning: {stuck} plain def handler(s) still running after the grace period; "
                              "exiting without them (their events go back to the queue)")
            self.stderr.flush()
            os._exit(code)
        if code:
            raise SystemExit(code)
