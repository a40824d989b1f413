"""Registers the audit listener with Airflow (the plugins folder is scanned for AirflowPlugin classes)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from falaj_airflow import audit_listener


class FalajAuditPlugin(AirflowPlugin):
    name = "falaj_audit"
    listeners = [audit_listener]  # noqa: RUF012 - Airflow reads the class attribute
