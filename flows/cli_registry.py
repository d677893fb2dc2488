"""Registry commands of the ``shelfwise`` CLI: tune, gate, compare, promote, rollback, history.

Registered on the main typer app by ``register(app)`` (flows/cli.py). Only ``tune`` and ``gate``
run Prefect flows; the others are quick registry operations.
"""

from __future__ import annotations

import typer
from rich.table import Table

from shelfwise.flows.cli_output import emit_json, stdout_to_stderr

TASK_HELP = "a declared task (configs/tasks/<name>.yaml), the path of a task YAML, or a model"


def resolve_task(ref: str):
    """``ref`` as a declared task or a task YAML path -> the declaration; None when it names
    neither (then it is taken as a registered model name). A broken declaration is an error."""
    from shelfwise.configs.tasks import load_task, task_path

    return load_task(ref) if task_path(ref).is_file() else None


def _model(ref: str) -> str:
    """The registered model a verb's argument means: the task's, or the name itself."""
    from shelfwise.flows.cli import user_errors

    with user_errors():
        task = resolve_task(ref)
    return task.registered_model if task else ref


def _ctx(platform_config: str):
    """(platform, MlflowClient, console) with the tracking server reachable."""
    import mlflow

    from shelfwise.flows.cli import _setup, console, user_errors
    from shelfwise.registry.tracking import ensure_tracking_uri

    platform = _setup(platform_config)
    with user_errors():
        mlflow.set_tracking_uri(ensure_tracking_uri(platform))
    return platform, mlflow.MlflowClient(), console


def _registry(platform_config: str):
    """(platform, registry client, console) for promote and rollback: MLflow's REST API without
    importing ``mlflow`` (registry/rest.py), so the alias moves seconds sooner."""
    from shelfwise.flows.cli import _setup, console, user_errors
    from shelfwise.registry.rest import RestRegistry
    from shelfwise.registry.tracking import ensure_tracking_uri

    platform = _setup(platform_config)
    with user_errors():
        uri = ensure_tracking_uri(platform)
    if not uri.startswith(("http://", "https://")):  # a local store: only MLflow's client
        import mlflow

        return platform, mlflow.MlflowClient(uri), console
    return platform, RestRegistry(uri), console


def _print_outcome(console, out: dict) -> None:
    colour = "green" if out["promoted"] else "yellow"
    console.print(
        f"[{colour}]{out['decision']}[/{colour}] {out['model_name']} v{out['candidate']}: "
        f"@champion {out['champion_before']} -> {out['champion_after']} "
        f"(history #{out['history_id']})"
    )
    for r in out["reasons"]:
        console.print(f"  - {r}")


def tune(
    task: str = typer.Argument(..., help="a declared tabular task or the path of its YAML"),
    trials: int = typer.Option(None, "--trials", help="trials for this worker (config default)"),
    timeout: float = typer.Option(None, "--timeout", help="seconds for this worker"),
    study_name: str = typer.Option(None, help="Optuna study (config default)"),
    storage: str = typer.Option(None, help="Optuna RDB URL (env SHELFWISE_OPTUNA_STORAGE)"),
    seed_offset: int = typer.Option(0, help="give each parallel worker a different offset"),
    pruning: bool = typer.Option(None, "--pruning/--no-pruning", help="override the config"),
    cv_folds: int = typer.Option(None, help="CV folds per trial (config default)"),
    register: bool = typer.Option(
        True, "--register/--no-register", help="refit the best, register it as @challenger"
    ),
    promote: bool = typer.Option(True, "--promote/--no-promote", help="gate the new version"),
    model_name: str = typer.Option(None, help="registered model name (config default)"),
    trigger: str = typer.Option("manual", help="manual, schedule, feedback or drift"),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Optuna search; run it in several processes against one storage to add workers."""
    from shelfwise.flows.cli import _setup, console, user_errors

    with stdout_to_stderr(json_out):
        _setup(platform_config)
        from shelfwise.flows.tune import tune_tabular

        with user_errors():
            result = tune_tabular(
                task=task,
                n_trials=trials,
                timeout_s=timeout,
                study_name=study_name,
                storage=storage,
                seed_offset=seed_offset,
                pruning=pruning,
                cv_folds=cv_folds,
                register_best=register,
                promote=promote,
                model_name=model_name,
                trigger=trigger,
                platform_config=platform_config,
            )
    if json_out:
        emit_json(result)
        return
    console.print(
        f"study {result['study_name']} ({result['storage']}): {result['study_trials']} trials "
        f"({result['worker_trials']} by this worker, {result['study_pruned']} pruned), "
        f"best CV {result.get('metric', 'score')} {result['best_value']:.4f} "
        f"(trial {result['best_trial']})"
    )
    console.print(f"best params: {result['best_params']}")
    if result["registered_version"]:
        console.print(f"registered v{result['registered_version']} as @challenger")
    if result["gate"]:
        _print_outcome(console, result["gate"])


def gate(
    model: str = typer.Argument(..., help=TASK_HELP),
    candidate: str = typer.Option("challenger", help="version number or alias to gate"),
    trigger: str = typer.Option("manual", help="manual, schedule, feedback or drift"),
    actor: str = typer.Option(None, help="who asks (default: $SHELFWISE_ACTOR or the OS user)"),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Gate a version against @champion with its task's rule and evaluator (a registered model
    name: the version's shelfwise.task tags pick the task); promote it if it wins."""
    from shelfwise.flows.cli import _setup, console, user_errors

    with stdout_to_stderr(json_out):
        _setup(platform_config)
        from shelfwise.flows.promote import gate_and_promote_flow

        with user_errors():
            task = resolve_task(model)
            out = gate_and_promote_flow(
                model_name=task.registered_model if task else model,
                candidate=candidate,
                trigger=trigger,
                actor=actor,
                task=str(task.source) if task else None,
                platform_config=platform_config,
            )
    if json_out:
        emit_json(out)
        return
    _print_outcome(console, out)


def compare(
    model: str = typer.Argument(..., help=TASK_HELP),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Versions with their holdout metrics, aliases and latest promotion decision."""
    from shelfwise.flows.cli import user_errors

    name = _model(model)
    with stdout_to_stderr(json_out):
        _, client, console = _ctx(platform_config)
        from shelfwise.registry.promotion import version_rows

        with user_errors():
            rows = version_rows(client, name)
            for r in rows:
                r["aliases"] = [f"@{a}" for a in r["aliases"]]
    if json_out:
        emit_json(rows)
        return
    metrics = compare_metrics(model, rows)
    table = Table(title=f"{name}: {len(rows)} version(s)")
    for col in ("version", "aliases", "family", *metrics, "eval set", "decision"):
        numeric = col in metrics
        table.add_column(col, justify="right" if numeric else "left", no_wrap=col != "eval set")
    table.add_column("reason", overflow="fold")
    for r in rows:
        m = r["metrics"]
        table.add_row(
            str(r["version"]),
            " ".join(r["aliases"]),
            r.get("family") or "-",
            *(f"{m[k]:.4f}" if k in m else "-" for k in metrics),
            r["eval_fingerprint"] or "-",
            r["decision"] or "-",
            (r["reason"] or "")[:60],
        )
    console.print(table)


def compare_metrics(ref: str, rows: list[dict], most: int = 4) -> list[str]:
    """The columns of ``compare``: the task's gate metrics, else the first metrics recorded."""
    from shelfwise.configs.tasks import gate_rule

    task = resolve_task(ref)
    if task is not None:
        return gate_rule(task).metrics()[:most]
    seen = dict.fromkeys(k for r in rows for k in r["metrics"])
    return list(seen)[:most]


def promote(
    model: str = typer.Argument(..., help=TASK_HELP),
    version: str = typer.Option(..., "--version", help="version number to make @champion"),
    reason: str = typer.Option(..., "--reason", help="why (recorded)"),
    actor: str = typer.Option(None, help="who (default: $SHELFWISE_ACTOR or the OS user)"),
    platform_config: str = typer.Option("platform", "--platform"),
) -> None:
    """Manual override: make a version @champion without the gate (recorded with the reason)."""
    platform, client, console = _registry(platform_config)
    from shelfwise.flows.cli import user_errors
    from shelfwise.registry.history import HistoryStore
    from shelfwise.registry.promotion import promote_manual

    store = HistoryStore.from_url(platform.store_url)
    try:
        with user_errors():
            out = promote_manual(client, store, _model(model), version, reason, actor)
    finally:
        store.dispose()
    _print_outcome(console, out.as_dict())


def rollback(
    model: str = typer.Argument(..., help=TASK_HELP),
    reason: str = typer.Option("", "--reason", help="why (recorded)"),
    actor: str = typer.Option(None, help="who (default: $SHELFWISE_ACTOR or the OS user)"),
    platform_config: str = typer.Option("platform", "--platform"),
) -> None:
    """Point @champion back to @previous (recorded)."""
    platform, client, console = _registry(platform_config)
    from shelfwise.flows.cli import user_errors
    from shelfwise.registry.history import HistoryStore
    from shelfwise.registry.promotion import rollback as do_rollback

    store = HistoryStore.from_url(platform.store_url)
    try:
        with user_errors():
            out = do_rollback(client, store, _model(model), reason, actor)
    finally:
        store.dispose()
    _print_outcome(console, out.as_dict())


def history(
    model: str = typer.Argument(..., help=TASK_HELP),
    limit: int = typer.Option(None, help="only the last N events"),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Every promotion decision, manual override and rollback of a model, oldest first."""
    from shelfwise.flows.cli import _setup, console
    from shelfwise.registry.history import HistoryStore

    with stdout_to_stderr(json_out):
        platform = _setup(platform_config)
        store = HistoryStore.from_url(platform.store_url)
        try:
            entries = store.entries(_model(model), limit)
        finally:
            store.dispose()
    if json_out:
        emit_json([e.as_dict() for e in entries])
        return
    table = Table(title=f"{_model(model)}: promotion history ({len(entries)} events)")
    table.add_column("#", no_wrap=True)
    table.add_column("time (UTC)")
    table.add_column("event", no_wrap=True)
    table.add_column("champion", no_wrap=True)
    table.add_column("interval")
    table.add_column("by")
    table.add_column("reason", overflow="fold")
    for e in entries:
        iv = (
            f"[{e.interval_low:+.4f}, {e.interval_high:+.4f}]"
            if e.interval_low is not None and e.interval_high is not None
            else "-"
        )
        table.add_row(
            str(e.id),
            e.created_at.strftime("%Y-%m-%d %H:%M:%S") if e.created_at else "-",
            f"{e.action} {e.decision} v{e.to_version}",
            f"{e.from_version or '-'} -> {e.champion_after or '-'}",
            iv,
            f"{e.trigger}/{e.actor}",
            e.reason[:200],
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the registry commands to the main ``shelfwise`` app."""
    for fn in (tune, gate, compare, promote, rollback, history):
        app.command(fn.__name__)(fn)
