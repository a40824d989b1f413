"""Train every model family of a use case on a point-in-time training set, gate it, and package it.

Triggered by the `features` asset, or by the `retrain` asset the monitoring DAG emits on new critical
drift. `build_training_set` joins features as of each event;
one `train_<family>` task per family runs `python -m models.train` (a local subprocess, or a GPU pod
through the KubernetesPodOperator when `FALAJ_TRAINING_BACKEND=kubernetes`); `evaluate_gate` registers
the candidates and makes the best the `challenger` only if it clears the use case's policy; `package`
builds its Bento. A second person promotes it to champion with `falaj models promote`.
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, get_current_context, task
from falaj_airflow.runs import asset_name, dag_args, run_window
from falaj_airflow.training import train_task

from pipelines.spec import UseCaseSpec, list_specs


def build(spec: UseCaseSpec) -> None:
    model = Asset(name=asset_name(spec.name, "model"))

    @dag(
        **dag_args(
            spec,
            "training",
            Asset(name=asset_name(spec.name, "features")) | Asset(name=asset_name(spec.name, "retrain")),
            lookback_days=60,
        ),
        doc_md=__doc__,
    )
    def training_dag() -> None:
        @task
        def build_training_set() -> dict[str, object]:
            from pipelines.spec import load_spec
            from pipelines.training_set import build_training_set as build_set

            start, end = run_window(get_current_context())
            return build_set(load_spec(spec.name), start, end).to_xcom()

        @task
        def evaluate_gate(training_set: dict[str, object]) -> dict[str, object]:
            from pipelines.gate import evaluate_gate as gate
            from pipelines.spec import load_spec
            from pipelines.training import output_dir

            use_case = load_spec(spec.name)
            dirs = [str(output_dir(use_case, str(training_set["sha256"]), m.family)) for m in use_case.models]
            return gate(use_case, training_set, dirs).to_xcom()

        @task(outlets=[model])
        def package(decision: dict[str, object]) -> str:
            from airflow.sdk.exceptions import AirflowSkipException

            from pipelines.packaging import package as build_bento
            from pipelines.spec import load_spec

            if not decision["passed"]:
                raise AirflowSkipException(f"gate refused: {decision['reason']}")
            # The challenger is packaged now so approval promotes an artifact that already builds.
            return build_bento(load_spec(spec.name), int(str(decision["candidate_version"])))

        training_set = build_training_set()
        decision = evaluate_gate(training_set)
        for family in [m.family for m in spec.models]:
            training_set >> train_task(spec, family, training_set) >> decision
        package(decision)

    training_dag()


for use_case in list_specs():
    build(use_case)
