"""One typed settings object for the whole platform, read from ``FALAJ_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Where the platform keeps its state and which profile it runs.

    ``local`` (the default) needs nothing but this checkout: SQLite and files under ``home``.
    """

    model_config = SettingsConfigDict(env_prefix="FALAJ_", frozen=True, extra="ignore")

    profile: Literal["local", "prod"] = "local"
    home: Path = Field(default=PROJECT_DIR / ".falaj", description="Root of all local state.")
    project_dir: Path = PROJECT_DIR
    database_url: str | None = Field(default=None, description="Platform DB; SQLite under home if unset.")
    airflow_database_url: str | None = Field(
        default=None, description="Airflow's metadata DB; SQLite under home if unset (PostgreSQL in prod)."
    )
    training_backend: Literal["local", "kubernetes"] | None = Field(
        default=None, description="Overrides the use case's backend for the profile (spec training_backends)."
    )
    feast_registry_url: str = Field(
        default="postgresql+psycopg://postgres@127.0.0.1:5432/falaj_feast",
        description="Feast's SQL registry in the prod profile.",
    )
    redis_connection: str = Field(
        default="127.0.0.1:6379,db=0", description="Feast's Redis online store in the prod profile."
    )
    stream_redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="The event broker (Redis Streams) in the prod profile.",
    )
    require_tls: bool | None = Field(
        default=None,
        description="Refuse connections without verified TLS; unset, on in prod and off in local.",
    )
    tls_ca_file: Path | None = Field(
        default=None, description="The CA every TLS client verifies servers against; else the system's."
    )
    storage_region: str = Field(
        default="ae-dubai-1", description="Region of this home's storage: lake, artifacts, platform DB."
    )
    alert_webhook_url: str | None = Field(
        default=None, description="Where failed data-quality gates and monitoring alerts are posted as JSON."
    )
    alert_email: str | None = Field(
        default=None,
        description="Comma-separated addresses monitoring alerts are mailed to, through Airflow's "
        "`smtp_default` connection.",
    )
    alert_email_from: str = Field(default="falaj-alerts@localhost", description="Sender of alert mail.")
    ui_url: str | None = Field(
        default=None,
        description="The Airflow web UI's base URL (`falaj up` sets it): alerts link their report through "
        "its Falaj page; unset, they give the report's path.",
    )
    actor: str = Field(default="falaj-system", description="Who the platform acts as in lineage records.")
    oidc_issuer: str | None = Field(
        default=None,
        description="The OIDC issuer (its `iss`) whose bearer tokens the scoring service accepts; "
        "unset, it accepts API keys only.",
    )
    oidc_audience: str | None = Field(
        default=None, description="The `aud` a bearer token must carry: the scoring service's id there."
    )
    oidc_jwks_url: str | None = Field(
        default=None,
        description="The issuer's signing keys (JWKS); unset, read once from its openid-configuration.",
    )
    oidc_user_claim: str = Field(default="sub", description="The bearer token's claim that names the user.")
    oidc_roles_claim: str = Field(
        default="groups",
        description="The bearer token's claim listing the user's groups (a dotted path for nested claims); "
        "policies/rbac.yaml's oidc_roles maps them to roles.",
    )

    @field_validator("home")
    @classmethod
    def _absolute(cls, home: Path) -> Path:
        # Feast's apply changes the working directory; a relative home would then point elsewhere.
        return home.resolve()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def platform_db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home.resolve() / 'platform.db'}"

    @property
    def tls_required(self) -> bool:
        """Whether every socket must use TLS that verifies the server (pipelines/tls.py checks it)."""
        return self.profile == "prod" if self.require_tls is None else self.require_tls

    @property
    def source_dir(self) -> Path:
        """Where source systems drop their files (the generator writes here)."""
        return self.home / "source"

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def feature_repo_dir(self) -> Path:
        return self.project_dir / "feature_repo"

    @property
    def feature_store_yaml(self) -> Path:
        """One ``feature_store.yaml`` per profile over the same definitions."""
        name = "feature_store.yaml" if self.profile == "local" else f"feature_store.{self.profile}.yaml"
        return self.feature_repo_dir / name

    @property
    def usecases_dir(self) -> Path:
        return self.project_dir / "usecases"

    @property
    def expectations_dir(self) -> Path:
        return self.project_dir / "expectations"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import time)."""
    return Settings()
