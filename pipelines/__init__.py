"""Falaj platform library: plain functions that DAGs, the CLI and the Bento service call.

Nothing here imports airflow, and nothing heavy is imported at package import time.
"""
