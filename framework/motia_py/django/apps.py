"""The Django app config: ``INSTALLED_APPS = [..., "motia_py.django"]`` adds the ``motia_worker`` command."""

from __future__ import annotations

from django.apps import AppConfig


class MotiaPyConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    """motia-py inside a Django project (label ``motia_py``; it has no models)."""

    name = "motia_py.django"
    label = "motia_py"
    verbose_name = "motia-py"
