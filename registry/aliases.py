"""Aliases ``@champion``, ``@previous``, ``@challenger``: resolve, validate, move, roll back.

Why the move order is crash-safe. MLflow keeps one version per alias per registered model, and
``set_registered_model_alias`` re-points an alias in one statement, so an alias can never be on
two versions: "two champions" is impossible by construction and "no champion" can only happen if
someone deletes the alias. What a crash *can* do is stop between two alias writes, so each
sequence is ordered such that every prefix of it is a consistent state:

* promote (champion C -> N): ``@previous = C`` first, then ``@champion = N``. A crash after the
  first write leaves ``@champion = C`` (nothing promoted) and ``@previous = C`` (harmless: a
  rollback then is a no-op that says so).
* rollback (champion C, previous P): ``@champion = P`` first, then ``@previous = C``. A crash
  after the first write has already rolled back; only the "undo the rollback" pointer is missing.

Concurrency (two promotions at once) is not solved here but by the per-model lock held around
decide-and-move in registry/promotion.py.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # any client with MlflowClient's registry calls (also registry/rest.py's)
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


class RegistryError(ValueError):
    """A registry operation was refused before anything changed. The message says why."""


@dataclass(frozen=True)
class AliasMove:
    model_name: str
    old_champion: str | None
    new_champion: str
    old_previous: str | None
    new_previous: str | None


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the alias is not set."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except Exception as exc:  # MlflowException, RegistryRequestError
        if _not_found(exc):
            return None
        raise


def _not_found(exc: Exception) -> bool:
    """MLflow's "no such model / version / alias" (either client carries ``error_code``)."""
    code = getattr(exc, "error_code", None)
    return code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"}


def aliases_of(client: MlflowClient, model_name: str) -> dict[str, str]:
    """alias -> version for every alias of the registered model."""
    return {k: str(v) for k, v in require_model(client, model_name).aliases.items()}


def require_model(client: MlflowClient, model_name: str):
    try:
        return client.get_registered_model(model_name)
    except Exception as exc:  # MlflowException, RegistryRequestError
        if _not_found(exc):
            raise RegistryError(f"no registered model named {model_name!r}") from None
        raise


def resolve_version(client: MlflowClient, model_name: str, ref: str | int) -> ModelVersion:
    """Validate ``ref`` (``3``, ``@champion``, ``champion``, ``models:/name/3``,
    ``models:/name@alias``) against ``model_name`` and return that version.

    Raises RegistryError, naming what is wrong, when the model or version does not exist, the
    reference names another model, or the version is not READY. Changes nothing.
    """
    require_model(client, model_name)
    ref_s = str(ref).strip()
    version: str | None = None
    alias: str | None = None
    m = _MODEL_URI.match(ref_s)
    if m:
        if m.group("name") != model_name:
            raise RegistryError(
                f"{ref_s} belongs to registered model {m.group('name')!r}, not {model_name!r}"
            )
        version, alias = m.group("version"), m.group("alias")
    elif ref_s.isdigit():
        version = ref_s
    elif re.fullmatch(r"@?[A-Za-z][\w-]*", ref_s):
        alias = ref_s.lstrip("@")
    else:
        raise RegistryError(
            f"{ref_s!r} is not a version number, an alias or a models:/ URI of {model_name!r}"
        )
    if alias is not None:
        version = alias_version(client, model_name, alias)
        if version is None:
            raise RegistryError(f"registered model {model_name!r} has no alias @{alias}")
    try:
        mv = client.get_model_version(model_name, str(version))
    except Exception as exc:  # MlflowException, RegistryRequestError
        if _not_found(exc):
            known = sorted(
                (int(v.version) for v in client.search_model_versions(f"name='{model_name}'")),
            )
            raise RegistryError(
                f"registered model {model_name!r} has no version {version} "
                f"(versions: {known or 'none'})"
            ) from None
        raise
    if mv.name != model_name:  # defensive: a store returning another model's version
        raise RegistryError(f"version {version} belongs to {mv.name!r}, not {model_name!r}")
    if mv.status != "READY":
        raise RegistryError(f"{model_name} version {version} is {mv.status}, not READY")
    return mv


def move_champion(client: MlflowClient, model_name: str, new_version: str) -> AliasMove:
    """``@previous`` <- old champion, then ``@champion`` <- ``new_version`` (see module doc).

    On an error after ``@previous`` moved, ``@previous`` is put back (best effort) before
    re-raising; ``@champion`` has not moved in that case.
    """
    old_champion = alias_version(client, model_name, CHAMPION)
    old_previous = alias_version(client, model_name, PREVIOUS)
    if old_champion == str(new_version):
        raise RegistryError(f"{model_name} version {new_version} is already @champion")
    if old_champion is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, old_champion)
    try:
        client.set_registered_model_alias(model_name, CHAMPION, str(new_version))
    except BaseException:
        if old_champion is not None:
            _restore(client, model_name, PREVIOUS, old_previous)
        raise
    logger.info("%s: @champion %s -> %s", model_name, old_champion, new_version)
    return AliasMove(
        model_name, old_champion, str(new_version), old_previous, old_champion or old_previous
    )


def plan_rollback(client: MlflowClient, model_name: str) -> tuple[str, str]:
    """(current champion, version to roll back to); RegistryError if there is nothing to do."""
    champion = alias_version(client, model_name, CHAMPION)
    previous = alias_version(client, model_name, PREVIOUS)
    if champion is None:
        raise RegistryError(f"{model_name} has no @champion: nothing to roll back")
    if previous is None:
        raise RegistryError(f"{model_name} has no @previous version to roll back to")
    if previous == champion:
        raise RegistryError(
            f"{model_name}: @previous and @champion are both version {champion}; "
            "nothing to roll back"
        )
    resolve_version(client, model_name, previous)  # still exists and READY
    return champion, previous


def apply_rollback(
    client: MlflowClient, model_name: str, champion: str, previous: str
) -> AliasMove:
    """``@champion`` <- ``previous`` first, then ``@previous`` <- the demoted ``champion``."""
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    client.set_registered_model_alias(model_name, PREVIOUS, champion)
    logger.info("%s: rolled back @champion %s -> %s", model_name, champion, previous)
    return AliasMove(model_name, champion, previous, previous, champion)


def rollback_champion(client: MlflowClient, model_name: str) -> AliasMove:
    champion, previous = plan_rollback(client, model_name)
    return apply_rollback(client, model_name, champion, previous)


def _restore(client: MlflowClient, model_name: str, alias: str, version: str | None) -> None:
    try:
        if version is None:
            client.delete_registered_model_alias(model_name, alias)
        else:
            client.set_registered_model_alias(model_name, alias, version)
    except Exception as exc:  # best effort while another error propagates
        logger.warning("could not restore @%s of %s to %s: %s", alias, model_name, version, exc)


def set_challenger(client: MlflowClient, model_name: str, version: str) -> None:
    client.set_registered_model_alias(model_name, CHALLENGER, str(version))


def clear_challenger_if(client: MlflowClient, model_name: str, version: str) -> None:
    """A promoted challenger is the champion now: drop ``@challenger`` if it points at it."""
    if alias_version(client, model_name, CHALLENGER) == str(version):
        client.delete_registered_model_alias(model_name, CHALLENGER)
