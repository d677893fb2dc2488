"""The registry calls a promotion makes, over MLflow's REST API, without importing ``mlflow``.

``shelfwise promote`` / ``rollback`` touch a handful of registry endpoints; importing the
``mlflow`` package to make them costs seconds (most of the command's wall time), and each of
those seconds delays the swap that follows. :class:`RestRegistry` is the subset of
``MlflowClient`` that registry/aliases.py and registry/promotion.py call, on the same REST
endpoints the client uses (``/api/2.0/mlflow/...``), returning objects with the attributes they
read, and raising :class:`RegistryRequestError` with MLflow's ``error_code``. Anything else (the
gate, training, loading models) keeps using ``MlflowClient``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx

API = "/api/2.0/mlflow"


class RegistryRequestError(RuntimeError):
    """An MLflow REST error: ``error_code`` as MLflow names it (e.g. RESOURCE_DOES_NOT_EXIST)."""

    def __init__(self, error_code: str, message: str, status: int) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.status = status


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    status: str
    run_id: str | None
    source: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    creation_timestamp: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class Model:
    name: str
    aliases: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _version(doc: dict[str, Any]) -> Version:
    return Version(
        name=doc["name"],
        version=str(doc["version"]),
        status=doc.get("status", "READY"),
        run_id=doc.get("run_id") or None,
        source=doc.get("source"),
        tags={t["key"]: t.get("value", "") for t in doc.get("tags", [])},
        aliases=list(doc.get("aliases", [])),
        creation_timestamp=int(doc["creation_timestamp"]) if "creation_timestamp" in doc else None,
        description=doc.get("description"),
    )


def _auth_headers(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    token = environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


class RestRegistry:
    """The registry subset of ``MlflowClient`` used by promotions, on plain HTTP."""

    def __init__(self, tracking_uri: str, timeout_s: float = 30.0) -> None:
        env = os.environ
        user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
        self.tracking_uri = tracking_uri.rstrip("/")
        self._http = httpx.Client(
            base_url=self.tracking_uri + API,
            timeout=timeout_s,
            headers=_auth_headers(env),
            auth=(user, password or "") if user else None,
        )

    def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "GET":
            r = self._http.get(path, params=body)
        else:
            r = self._http.request(method, path, json=body)
        if r.status_code >= 400:
            try:
                doc = r.json()
            except ValueError:
                doc = {}
            raise RegistryRequestError(
                doc.get("error_code", f"HTTP_{r.status_code}"),
                doc.get("message", r.text[:300]),
                r.status_code,
            )
        return r.json() if r.content else {}

    def get_registered_model(self, name: str) -> Model:
        doc = self._call("GET", "/registered-models/get", {"name": name})["registered_model"]
        return Model(
            name=doc["name"],
            aliases={a["alias"]: str(a["version"]) for a in doc.get("aliases", [])},
            tags={t["key"]: t.get("value", "") for t in doc.get("tags", [])},
        )

    def get_model_version(self, name: str, version: str) -> Version:
        body = {"name": name, "version": str(version)}
        return _version(self._call("GET", "/model-versions/get", body)["model_version"])

    def get_model_version_by_alias(self, name: str, alias: str) -> Version:
        body = {"name": name, "alias": alias}
        return _version(self._call("GET", "/registered-models/alias", body)["model_version"])

    def search_model_versions(self, filter_string: str) -> list[Version]:
        out, token = [], None
        while True:
            body: dict[str, Any] = {"filter": filter_string, "max_results": 1000}
            if token:
                body["page_token"] = token
            doc = self._call("GET", "/model-versions/search", body)
            out.extend(_version(v) for v in doc.get("model_versions", []))
            token = doc.get("next_page_token")
            if not token:
                return out

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        body = {"name": name, "alias": alias, "version": str(version)}
        self._call("POST", "/registered-models/alias", body)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self._call("DELETE", "/registered-models/alias", {"name": name, "alias": alias})

    def set_model_version_tag(self, name: str, version: str, key: str, value: Any) -> None:
        body = {"name": name, "version": str(version), "key": key, "value": str(value)}
        self._call("POST", "/model-versions/set-tag", body)

    def close(self) -> None:
        self._http.close()
