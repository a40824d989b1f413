"""Data-contract CI: the declared data still fits what runs.

``python -m pipelines.data_contracts`` checks three contracts and exits 1 naming every breach:

1. ``feast plan``: the definitions in ``feature_repo/`` parse and plan against the configured Feast
   registry (a home that never applied plans against an empty one; nothing is written to it).
2. Every feature service a deployed model (alias champion, challenger or shadow) reads still exists in
   ``feature_repo/`` with each of the model's features, of the type the registry serves it as now: a
   renamed, dropped or retyped feature names the model, the service and the feature.
3. Every expectation suite in ``expectations/`` accepts its known-good fixture and rejects its known-bad
   one (``tests/fixtures/contracts/<suite>.{good,bad}.parquet``): a suite that stops passing good data,
   or that no longer catches the bad, fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.settings import get_settings

log = logging.getLogger(__name__)
DEPLOYED_ALIASES = ("champion", "challenger", "shadow")
FIXTURES = Path("tests") / "fixtures" / "contracts"

# A feature service's schema: feature name -> (feature view, Feast dtype).
Schema = dict[str, tuple[str, str]]


@dataclass(frozen=True)
class DeployedModel:
    tag: str
    alias: str
    feature_service: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    diff: str
    defined: dict[str, Schema]  # the services feature_repo/ defines
    applied: dict[str, Schema]  # the services the registry serves now


def service_schema(service: Any) -> Schema:
    """Each feature a Feast feature service serves, with its view and dtype."""
    return {
        feature.name: (projection.name_to_use(), str(feature.dtype))
        for projection in service.feature_view_projections
        for feature in projection.features
    }


@contextmanager
def _repo_modules(repo: Path) -> Iterator[None]:
    """Import the repo's files afresh, as `feast plan` does: from inside the repo, as top-level modules."""
    for module in repo.glob("*.py"):
        sys.modules.pop(module.stem, None)
    if str(repo) not in sys.path:
        sys.path.append(str(repo))
    working_dir = Path.cwd()
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(working_dir)


@contextmanager
def _planning_store() -> Iterator[tuple[Any, str]]:
    """The configured Feast store, and where its registry is; a file registry that does not exist yet
    is planned against as an empty one in a scratch directory, so the check never creates it."""
    from feast import FeatureStore

    from pipelines.features import feature_store

    store = feature_store()
    registry = store.config.registry
    if registry.registry_type != "file":
        from sqlalchemy import make_url

        url = make_url(registry.path).render_as_string(hide_password=True)
        yield store, f"{registry.registry_type} {url}"
        return
    if Path(registry.path).exists():
        yield store, str(registry.path)
        return
    home = os.environ["FALAJ_HOME"]
    with tempfile.TemporaryDirectory(prefix="falaj-feast-plan-") as scratch:
        (Path(scratch) / "feast").mkdir()
        os.environ["FALAJ_HOME"] = scratch  # the YAML's ${FALAJ_HOME} paths, read when the store is built
        try:
            empty = FeatureStore(repo_path=store.repo_path, fs_yaml_file=get_settings().feature_store_yaml)
        finally:
            os.environ["FALAJ_HOME"] = home
        yield empty, f"{registry.path} (not created yet: planned against an empty registry)"


def feast_plan() -> Plan:
    """``feast plan`` of ``feature_repo/`` against the configured registry, and both sides' services.

    Source validation is skipped: the sources are the lake tables the pipeline writes, which a CI home
    does not hold; the definitions, their references and the diff are what is checked.

    Raises:
        Exception: Whatever Feast raises for definitions that do not parse or plan.
    """
    import click
    from feast import Project
    from feast.repo_operations import parse_repo

    with _planning_store() as (store, where):
        repo = Path(store.repo_path)
        with _repo_modules(repo):
            contents = parse_repo(repo)
        names = [service.name for service in contents.feature_services]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # Feast would apply them one over the other, the last one silently winning
            raise ValueError(f"feature service(s) {', '.join(twice)} defined more than once in {repo}")
        if not contents.projects:
            contents.projects.append(Project(name=store.project))
        registry_diff, infra_diff, _ = store.plan(contents)
        applied = {
            service.name: service_schema(service)
            for service in store.registry.list_feature_services(store.project, allow_cache=False)
        }
    defined = {service.name: service_schema(service) for service in contents.feature_services}
    changes = click.unstyle(f"{registry_diff.to_string()}\n{infra_diff.to_string()}")
    diff = f"registry: {where}\n{changes}".rstrip()
    return Plan(diff, defined, applied)


def deployed_models() -> list[DeployedModel]:
    """The models an alias serves now, in every use case of the platform DB (none if it has no DB yet)."""
    from sqlalchemy import distinct, make_url, select

    from pipelines import registry

    url = make_url(get_settings().platform_db_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
        return []
    models = []
    with registry.session() as db:
        for use_case in db.scalars(select(distinct(registry.AliasEvent.use_case))).all():
            for alias in DEPLOYED_ALIASES:
                version = registry.resolve_alias(db, use_case, alias)
                if version is not None:
                    models.append(
                        DeployedModel(version.tag, alias, version.feature_service, tuple(version.features))
                    )
    return models


def check_deployed_features(
    models: list[DeployedModel], applied: dict[str, Schema], defined: dict[str, Schema]
) -> list[str]:
    """Every breach of a deployed model's feature contract, one line each (empty when all hold)."""
    breaches = []
    for model in models:
        who = f"{model.tag} ({model.alias}) reads feature service {model.feature_service!r}"
        serving = applied.get(model.feature_service)
        declared = defined.get(model.feature_service)
        if serving is None:
            breaches.append(f"{who}, which the Feast registry does not hold")
            continue
        if declared is None:
            breaches.append(f"{who}, which feature_repo/ no longer defines (removed or renamed)")
            continue
        for feature in model.features:
            if feature not in serving:
                breaches.append(
                    f"{who}: feature {feature!r} is not in the registry's {model.feature_service}"
                )
            elif feature not in declared:
                view = serving[feature][0]
                breaches.append(
                    f"{who}: feature {feature!r} (view {view}) is no longer in the service in "
                    "feature_repo/ (removed or renamed)"
                )
            elif declared[feature][1] != serving[feature][1]:
                view, was = serving[feature]
                breaches.append(
                    f"{who}: feature {feature!r} (view {view}) is {was} in the registry but "
                    f"{declared[feature][1]} in feature_repo/ (retyped)"
                )
    return breaches


def _failed_expectations(result: Any) -> list[str]:
    """Each failed expectation of a GX result: its type, column and what it saw."""
    from pipelines.validate import _describe

    failed = []
    for item in result.results:
        if not item.success:
            column = item.expectation_config.kwargs.get("column")
            on = f" on {column!r}" if column else ""
            failed.append(f"{item.expectation_config.type}{on} ({_describe(item)})")
    return failed


@dataclass(frozen=True)
class SuiteCheck:
    suite: str
    breaches: list[str]
    rejected_bad_by: list[str]  # the expectations the known-bad fixture failed


def check_suites(fixtures: Path) -> list[SuiteCheck]:
    """Each suite in ``expectations/`` against ``<fixtures>/<suite>.good.parquet`` and ``.bad.parquet``."""
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from pipelines.validate import validate_frame

    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    checks = []
    for path in sorted(get_settings().expectations_dir.glob("*.json")):
        suite = path.name.removesuffix(".json")
        good, bad = fixtures / f"{suite}.good.parquet", fixtures / f"{suite}.bad.parquet"
        missing = [str(fixture) for fixture in (good, bad) if not fixture.exists()]
        if missing:
            checks.append(SuiteCheck(suite, [f"suite {suite} has no fixture {' or '.join(missing)}"], []))
            continue
        try:
            on_good = _failed_expectations(validate_frame(context, suite, pd.read_parquet(good)))
            rejected = _failed_expectations(validate_frame(context, suite, pd.read_parquet(bad)))
        except Exception as error:  # a suite that cannot load or run is the finding
            checks.append(
                SuiteCheck(suite, [f"suite {suite} could not run: {type(error).__name__}: {error}"], [])
            )
            continue
        breaches = [
            f"suite {suite} rejects its known-good fixture {good.name}: {failure}" for failure in on_good
        ]
        if not rejected:
            breaches.append(
                f"suite {suite} accepts its known-bad fixture {bad.name}: an expectation that caught it "
                "was dropped or loosened"
            )
        checks.append(SuiteCheck(suite, breaches, rejected))
    return checks


def run(fixtures: Path) -> list[str]:
    """Check every contract, print what held and what broke; returns the breaches."""
    breaches: list[str] = []
    print("== feast plan")
    try:
        plan = feast_plan()
    except Exception as error:  # any definition error Feast raises is the finding to report
        breaches.append(
            f"feast plan of {get_settings().feature_repo_dir} failed: {type(error).__name__}: {error}"
        )
        plan = None
    if plan is not None:
        print(plan.diff)
        print("== feature services of deployed models")
        models = deployed_models()
        for model in models:
            print(f"{model.tag} ({model.alias}): {model.feature_service}, {len(model.features)} features")
        if not models:
            print(f"no deployed model in {get_settings().platform_db_url}")
        breaches += check_deployed_features(models, plan.applied, plan.defined)
    print("== expectation suites against fixtures")
    for check in check_suites(fixtures):
        print(f"{'BROKEN' if check.breaches else 'ok'} {check.suite}")
        for failure in check.rejected_bad_by:
            print(f"    known-bad fixture rejected by {failure}")
        breaches += check.breaches
    return breaches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fixtures",
        type=Path,
        default=None,
        help=f"folder of <suite>.good.parquet and <suite>.bad.parquet (default: {FIXTURES} in the project)",
    )
    arguments = parser.parse_args(argv)
    fixtures = arguments.fixtures or get_settings().project_dir / FIXTURES
    if not fixtures.is_dir():
        parser.error(f"fixtures folder {fixtures} does not exist")
    breaches = run(fixtures)
    if breaches:
        print(f"\n{len(breaches)} data contract(s) broken:", file=sys.stderr)
        for breach in breaches:
            print(f"  - {breach}", file=sys.stderr)
        return 1
    print("\nevery data contract holds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
