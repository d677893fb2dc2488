"""Tenants: the retailers sharing one Shelfwise, each owning some of the declared tasks.

``configs/tenants.yaml`` (``SHELFWISE_TENANTS_CONFIG`` names another file)::

    tenants:
      - id: default
        display_name: Shelfwise
        tasks: "*"            # every declared task no other tenant owns
      - id: bakery
        display_name: Bakery chain
        tasks: [demand_forecast]

A task belongs to at most one tenant; one tenant may say ``"*"`` (the catch-all) and owns every
task nobody else names. The shipped file has only the ``default`` catch-all, which is today's
single-tenant platform: its tasks keep their registered model names, and the shared key
``SHELFWISE_API_KEY`` is a ``default`` key with every scope.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path

DEFAULT_TENANT = "default"
TENANTS_CONFIG_ENV = "SHELFWISE_TENANTS_CONFIG"
TENANT_ID_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
ALL_TASKS = "*"


class Tenant(StrictModel):
    id: str = Field(..., pattern=TENANT_ID_PATTERN, description="lowercase slug, in key and names")
    display_name: str = Field(..., min_length=1, max_length=200)
    tasks: Literal["*"] | list[str] = Field(default_factory=list, description='names, or "*"')

    @field_validator("tasks")
    @classmethod
    def _unique(cls, value: Literal["*"] | list[str]) -> Literal["*"] | list[str]:
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError(f"a task is listed twice: {value}")
        return value

    @property
    def catch_all(self) -> bool:
        return self.tasks == ALL_TASKS


class TenantsConfig(StrictModel):
    tenants: list[Tenant] = Field(
        default_factory=lambda: [
            Tenant(id=DEFAULT_TENANT, display_name="Shelfwise", tasks=ALL_TASKS)
        ],
        min_length=1,
    )

    @model_validator(mode="after")
    def _consistent(self) -> TenantsConfig:
        ids = [t.id for t in self.tenants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"tenant ids must be unique, got {ids}")
        catch_all = [t.id for t in self.tenants if t.catch_all]
        if len(catch_all) > 1:
            raise ValueError(f'only one tenant may own "*", got {catch_all}')
        owner: dict[str, str] = {}
        for tenant in self.tenants:
            for task in tenant.tasks if isinstance(tenant.tasks, list) else []:
                if task in owner:
                    raise ValueError(f"task {task!r} is owned by {owner[task]!r} and {tenant.id!r}")
                owner[task] = tenant.id
        return self

    def get(self, tenant_id: str) -> Tenant | None:
        return next((t for t in self.tenants if t.id == tenant_id), None)

    def owner_of(self, task: str) -> str | None:
        """The tenant owning ``task`` (named explicitly, else the catch-all; None: nobody)."""
        for tenant in self.tenants:
            if isinstance(tenant.tasks, list) and task in tenant.tasks:
                return tenant.id
        return next((t.id for t in self.tenants if t.catch_all), None)

    def owners(self, tasks: Iterable[str]) -> dict[str, str]:
        """task -> owning tenant, for the tasks somebody owns."""
        out = {task: self.owner_of(task) for task in tasks}
        return {task: owner for task, owner in out.items() if owner is not None}


def tenant_model_name(tenant: str, registered_model: str) -> str:
    """The registered model of a tenant's task: ``<tenant>.<model>``; the default tenant keeps
    today's names (so existing registries and the demo are unchanged)."""
    return registered_model if tenant == DEFAULT_TENANT else f"{tenant}.{registered_model}"


def load_tenants(path: str | Path | None = None) -> TenantsConfig:
    """The tenants file (``SHELFWISE_TENANTS_CONFIG`` or ``configs/tenants.yaml``); a missing
    shipped file means the single default tenant."""
    name = path or os.environ.get(TENANTS_CONFIG_ENV) or "tenants"
    resolved = resolve_config_path(name)
    if path is None and not os.environ.get(TENANTS_CONFIG_ENV) and not resolved.is_file():
        return TenantsConfig()
    return load_config(resolved, TenantsConfig)
