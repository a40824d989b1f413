"""Airflow glue shared by Falaj's DAG files (the plugins folder is on Airflow's sys.path)."""
