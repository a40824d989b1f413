"""The use-case spec: one YAML per use case, validated strictly before anything runs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.settings import get_settings

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=63)]
ColumnType = Literal["string", "float", "int", "timestamp", "bool"]
PiiTreatment = Literal["pseudonymize", "drop", "year_only"]
Profile = Literal["local", "prod"]
Backend = Literal["local", "kubernetes"]
DEFAULT_BACKENDS: dict[Profile, Backend] = {"local": "local", "prod": "kubernetes"}


class SpecError(ValueError):
    """A use-case spec is missing, unreadable or invalid; the message names the field and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SqlTable(_Strict):
    """An on-prem database table read incrementally: each run takes the rows whose watermark falls in
    its window. The connection URL comes from an environment variable, never from the spec."""

    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    watermark_column: str
    connection_env: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")


class Source(_Strict):
    """Where a dataset comes from: files dropped into ``<home>/source``, or a SQL table."""

    path: str | None = Field(
        default=None, description="csv: relative to the source directory; '{date}' marks daily partitions."
    )
    format: Literal["csv", "sql"] = "csv"
    sql: SqlTable | None = None
    columns: dict[str, ColumnType]
    event_time: str | None = None
    pii: dict[str, PiiTreatment] = Field(default_factory=dict)
    suite: str = Field(pattern=r"^[a-z_]+\.[a-z_]+$", description="Expectation suite '<dataset>.<stage>'.")

    @property
    def partitioned(self) -> bool:
        return self.path is not None and "{date}" in self.path

    @model_validator(mode="after")
    def _columns_known(self) -> Source:
        if self.format == "csv" and (self.path is None or self.sql is not None):
            raise ValueError("a csv source needs 'path' and no 'sql'")
        if self.format == "sql" and (self.sql is None or self.path is not None):
            raise ValueError("a sql source needs 'sql' and no 'path'")
        if self.sql is not None and self.columns.get(self.sql.watermark_column) != "timestamp":
            raise ValueError(f"watermark column '{self.sql.watermark_column}' must be a declared timestamp")
        for name in [*self.pii, *([self.event_time] if self.event_time else [])]:
            if name not in self.columns:
                raise ValueError(f"column '{name}' is not declared in columns")
        if self.event_time and self.columns[self.event_time] != "timestamp":
            raise ValueError(f"event_time column '{self.event_time}' must have type timestamp")
        return self


class ModelFamily(_Strict):
    family: Literal["lightgbm", "pytorch_mlp"]
    params: dict[str, Any] = Field(default_factory=dict)


Task = Literal["binary_classification", "regression"]
Metric = Literal["roc_auc", "pr_auc", "r2", "rmse", "mae", "wape"]
TASK_METRICS: dict[Task, frozenset[str]] = {
    "binary_classification": frozenset({"roc_auc", "pr_auc"}),
    "regression": frozenset({"r2", "rmse", "mae", "wape"}),
}
LOWER_IS_BETTER = frozenset({"rmse", "mae", "wape"})  # errors; the others are scores


def metric_task(metric: str) -> Task:
    return next(task for task, metrics in TASK_METRICS.items() if metric in metrics)


class GatePolicy(_Strict):
    """Policy as code: every rule a challenger must clear before it may replace the champion.

    Non-regression: the lower bound of the paired-bootstrap confidence interval of the candidate's
    improvement over the champion on ``metric`` (candidate − champion for a score, champion − candidate
    for an error), same test rows, must be ≥ ``min_improvement``, in the metric's units. A negative
    ``min_improvement`` tolerates a regression of that size; 0 asks for confidence that the candidate is at
    least as good. Rules whose limit is unset are reported but not judged. The primary metric says the
    task: AUCs for binary classification, r2 and errors for regression.
    """

    metric: Metric = Field(default="pr_auc", description="Primary metric: its limit and non-regression.")
    min_value: float | None = Field(
        default=None, description="Floor of a primary score (roc_auc, pr_auc, r2); the first model too."
    )
    max_value: float | None = Field(
        default=None, gt=0.0, description="Ceiling of a primary error (rmse, mae, wape); the first model too."
    )
    min_roc_auc: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Floor of ROC-AUC when it is not the primary metric."
    )
    min_pr_auc: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Floor of PR-AUC when it is not the primary metric."
    )
    min_improvement: float = Field(
        default=0.0, description="Bound for the CI lower bound of the improvement on the primary metric."
    )
    bootstrap_resamples: int = Field(
        default=1000, ge=100, le=100_000, description="Paired bootstrap resamples of the test rows."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Two-sided CI level.")
    bootstrap_seed: int = Field(default=0, ge=0, description="Seeds the resampling: same rows, same CI.")
    slices: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Test-row columns whose every value must not regress."
    )
    min_slice_rows: int = Field(default=500, ge=1, description="A smaller slice is reported, not judged.")
    min_slice_positives: int = Field(
        default=20, ge=1, description="Classification: a slice with fewer positives is reported, not judged."
    )
    slice_max_regression: float = Field(
        default=0.05,
        ge=0.0,
        description="Largest allowed worsening of a slice's primary metric, in its units.",
    )
    max_brier: float | None = Field(default=None, gt=0.0, le=1.0, description="Mean squared error of p.")
    max_ece: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Expected calibration error, 10 equal-width bins."
    )
    max_latency_ms_p99: float | None = Field(
        default=None, gt=0.0, description="Single-row ONNX p99 on one CPU thread, in milliseconds."
    )
    max_model_bytes: int | None = Field(default=None, gt=0, description="Size of model.onnx on disk.")
    max_parity_diff: float = Field(
        default=1e-5, ge=0.0, description="Largest |ONNX − native| probability difference on the test rows."
    )

    @property
    def task(self) -> Task:
        return metric_task(self.metric)

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    @field_validator("min_value")
    @classmethod
    def _auc_floor_is_a_share(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("metric") in ("roc_auc", "pr_auc") and not 0.0 <= value <= 1.0:
            raise ValueError("an AUC floor must be greater than or equal to 0 and less than or equal to 1")
        return value

    @model_validator(mode="after")
    def _limits_fit_the_metric(self) -> GatePolicy:
        primary, wrong = (
            ("max_value", "min_value") if not self.higher_is_better else ("min_value", "max_value")
        )
        if getattr(self, primary) is None or getattr(self, wrong) is not None:
            kind = "an error" if not self.higher_is_better else "a score"
            raise ValueError(f"{self.metric} is {kind}: give its limit as {primary}, not {wrong}")
        if self.metric in ("roc_auc", "pr_auc") and getattr(self, f"min_{self.metric}") is not None:
            raise ValueError(
                f"{self.metric} is the primary metric: its floor is min_value, not min_{self.metric}"
            )
        if self.task == "regression":
            for name in ("min_roc_auc", "min_pr_auc", "max_brier", "max_ece"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} judges probabilities; {self.metric} is a regression metric")
        if len(set(self.slices)) != len(self.slices):
            raise ValueError("slices must not repeat a column")
        return self

    def floors(self) -> dict[Metric, float]:
        """Score -> floor for the scores with one (the primary metric first when it is a score)."""
        floors: dict[Metric, float] = {}
        if self.higher_is_better and self.min_value is not None:
            floors[self.metric] = self.min_value
        others: tuple[tuple[Metric, float | None], ...] = (
            ("roc_auc", self.min_roc_auc),
            ("pr_auc", self.min_pr_auc),
        )
        for name, value in others:
            if value is not None:
                floors[name] = value
        return floors

    def ceilings(self) -> dict[Metric, float]:
        """Error -> ceiling: the primary metric's when it is an error."""
        return {} if self.higher_is_better or self.max_value is None else {self.metric: self.max_value}


class FreshnessPolicy(_Strict):
    """What serving does when a time-sensitive feature view is stale or has no value for the entity.

    ``reject`` answers 422 with the reason; ``default`` scores with the declared defaults; ``degrade``
    scores with the values treated as missing (the models impute them) and says so in the answer.
    """

    views: list[str] = Field(min_length=1, description="Feature views whose age matters.")
    max_age_hours: float = Field(gt=0)
    policy: Literal["reject", "default", "degrade"]
    defaults: dict[str, float] = Field(default_factory=dict, description="Values used by policy 'default'.")


class Serving(_Strict):
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Binary classification: the score from which to review."
    )
    freshness: dict[str, FreshnessPolicy] = Field(
        min_length=1, description="Per feature service: the stale and missing feature policy."
    )


class TrainingSet(_Strict):
    """Which events become labelled rows, and what request-time data they carry to on-demand features."""

    entity_source: str
    id_column: str = Field(description="Unique id of an event; orders ties when splitting by time.")
    request_columns: list[str] = Field(default_factory=list, description="Passed to on-demand features.")
    request_time_column: str | None = Field(default=None, description="Event time in epoch seconds, if used.")
    valid_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)


class Processing(_Strict):
    """The record of processing (GDPR Art. 30, UAE PDPL): why and on what basis personal data is used."""

    purpose: str = Field(min_length=10)
    legal_basis: str = Field(min_length=5, description="e.g. legal obligation (CBUAE AML/CFT rules).")
    controller: str
    data_subjects: list[str] = Field(min_length=1)
    recipients: list[str] = Field(min_length=1, description="Who receives the outputs (scores, reports).")
    retention_days: int = Field(gt=0, description="How long raw landings are kept before erasure.")
    subject_key: str | None = Field(
        default=None, description="The column that identifies a data subject; `falaj erase` finds them by it."
    )
    linked_keys: list[str] = Field(
        default_factory=list,
        description="Columns of a subject's rows that identify them too (their cards), erased with them.",
    )


class MonitoringSpec(_Strict):
    """How a served model's inputs and scores are compared with its reference profile, one window at a time.

    A feature drifts when its test's p-value, Benjamini-Hochberg adjusted across the window's features, is
    below ``false_discovery_rate`` and its PSI is at least ``psi_threshold``: the adjustment bounds false
    alarms among many features, the PSI floor keeps a very large window from flagging a trivial shift.
    Data-quality findings (missing values, out-of-range values, unseen categories) are reported apart.
    """

    categorical: list[Identifier] = Field(
        default_factory=list,
        description="Features profiled and tested as categories (shares, chi-square) rather than deciles.",
    )
    psi_threshold: float = Field(default=0.2, gt=0.0, description="Smallest PSI that counts as drift.")
    false_discovery_rate: float = Field(
        default=0.05, gt=0.0, lt=1.0, description="Benjamini-Hochberg q across the features of one window."
    )
    min_rows: int = Field(default=500, ge=1, description="A smaller window is insufficient, never an alert.")
    max_missing_rate_increase: float = Field(
        default=0.10, ge=0.0, le=1.0, description="Null rate above the reference's plus this is a finding."
    )
    max_out_of_range_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Largest share of values outside the reference [min, max] widened by 10% of the range.",
    )
    max_new_category_rate: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Largest share of values in categories unseen at reference."
    )

    max_stale_rate: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="Largest share of answers the freshness policy served on stale or missing features.",
    )  # fmt: skip
    performance_lookback_days: int = Field(
        default=7, ge=1, le=366,
        description="Labels arrive late: performance is judged on the predictions of this many days back.",
    )  # fmt: skip
    min_labelled: int = Field(default=500, ge=1, description="Fewer labelled predictions: not judged.")
    min_positives: int = Field(default=20, ge=1, description="Fewer positive labels: not judged.")

    @model_validator(mode="after")
    def _categorical_once(self) -> MonitoringSpec:
        if len(set(self.categorical)) != len(self.categorical):
            raise ValueError("categorical must not repeat a feature")
        return self


class UseCaseSpec(_Strict):
    """Everything the platform needs to know about one use case."""

    name: Identifier
    description: str
    region: str = Field(pattern=r"^[a-z]{2}-[a-z]+-\d$", description="Data region, e.g. ae-dubai-1.")
    schedule: str = "@daily"
    entities: dict[Identifier, str] = Field(min_length=1, description="Entity name -> join key column.")
    label: str
    task: Task = Field(default="binary_classification", description="What the label is: 0/1, or a quantity.")
    sources: dict[Identifier, Source] = Field(min_length=1)
    training_set: TrainingSet
    feature_service: str = Field(pattern=r"^[a-z][a-z0-9_]*_v\d+$")
    models: list[ModelFamily] = Field(min_length=1)
    training_backends: dict[Profile, Backend] = Field(
        default_factory=lambda: dict(DEFAULT_BACKENDS),
        description="Where training runs, per profile; FALAJ_TRAINING_BACKEND overrides it.",
    )
    gate: GatePolicy
    serving: Serving
    processing: Processing | None = Field(
        default=None, description="The record of processing; required when the sources hold personal data."
    )
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)

    @model_validator(mode="after")
    def _references_resolve(self) -> UseCaseSpec:
        if self.training_set.entity_source not in self.sources:
            raise ValueError(
                f"training_set.entity_source '{self.training_set.entity_source}' is not a source"
            )
        entity_source = self.sources[self.training_set.entity_source]
        if entity_source.event_time is None:
            raise ValueError("training_set.entity_source must declare an event_time")
        wanted = [
            self.label,
            self.training_set.id_column,
            *self.entities.values(),
            *self.training_set.request_columns,
        ]
        for column in wanted:
            if column not in entity_source.columns:
                raise ValueError(f"column '{column}' is not in source '{self.training_set.entity_source}'")
        if self.gate.task != self.task:
            raise ValueError(f"gate.metric {self.gate.metric} does not judge a {self.task} model")
        if (self.serving.threshold is None) == (self.task == "binary_classification"):
            raise ValueError("serving.threshold is required for binary classification, and only there")
        if self.processing is None and any(source.pii for source in self.sources.values()):
            raise ValueError("the sources hold personal data (pii): declare the record of processing")
        if self.feature_service not in self.serving.freshness:
            raise ValueError(f"serving.freshness has no policy for feature service '{self.feature_service}'")
        return self

    def training_backend(self) -> Backend:
        """Where this use case trains under the current profile; ``FALAJ_TRAINING_BACKEND`` overrides it."""
        from pipelines.settings import get_settings

        settings = get_settings()
        return settings.training_backend or self.training_backends.get(settings.profile, "local")

    @property
    def event_source(self) -> Source:
        return self.sources[self.training_set.entity_source]

    def model_params(self, family: str) -> dict[str, Any]:
        """The parameters the spec gives a model family; a family it does not declare is an error."""
        for model in self.models:
            if model.family == family:
                return model.params
        declared = ", ".join(model.family for model in self.models)
        raise SpecError(f"use case '{self.name}' declares no model family '{family}' (declared: {declared})")


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_spec(text: str, origin: str = "<string>") -> UseCaseSpec:
    """Parse and validate a spec; raise :class:`SpecError` naming each bad field and why."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: a spec must be a mapping at the top level")
    try:
        return UseCaseSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{origin}: invalid use-case spec\n{_describe(exc)}") from exc


def load_spec_file(path: Path) -> UseCaseSpec:
    spec = parse_spec(path.read_text(), origin=str(path))
    if spec.name != path.stem:
        raise SpecError(f"{path}: name '{spec.name}' must equal the file name '{path.stem}'")
    return spec


@lru_cache(maxsize=8)
def _load_all(usecases_dir: Path) -> dict[str, UseCaseSpec]:
    return {path.stem: load_spec_file(path) for path in sorted(usecases_dir.glob("*.yaml"))}


def list_specs() -> list[UseCaseSpec]:
    """Every use case under ``usecases/``, in name order."""
    return list(_load_all(get_settings().usecases_dir).values())


def load_spec(name: str) -> UseCaseSpec:
    specs = _load_all(get_settings().usecases_dir)
    if name not in specs:
        raise SpecError(f"unknown use case '{name}'; known: {', '.join(specs) or 'none'}")
    return specs[name]
