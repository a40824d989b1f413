"""Adds the Falaj page to the Airflow UI: the api-server mounts the app at /falaj, the nav shows it inside."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from falaj_airflow.ui import app


class FalajUiPlugin(AirflowPlugin):
    name = "falaj_ui"
    # Airflow reads the class attributes.
    fastapi_apps = [{"app": app, "url_prefix": "/falaj", "name": "Falaj platform"}]  # noqa: RUF012
    # With url_route set, the UI shows href in an iframe at /plugin/falaj instead of opening a new tab.
    external_views = [  # noqa: RUF012
        {"name": "Falaj platform", "href": "/falaj/", "destination": "nav", "url_route": "falaj"}
    ]
