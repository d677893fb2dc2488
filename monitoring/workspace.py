"""Evidently workspace: snapshots over time and a dashboard that `evidently ui` shows."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from evidently.core.report import Snapshot
from evidently.sdk.models import PanelMetric
from evidently.sdk.panels import counter_panel, line_plot_panel
from evidently.ui.workspace import Project, Workspace

logger = logging.getLogger(__name__)


def _dashboard(project: Project, prediction_column: str) -> None:
    project.dashboard.add_panel(
        counter_panel(
            "Shelfwise monitoring",
            [
                PanelMetric(
                    legend="drifted feature share",
                    metric="DriftedColumnsCount",
                    metric_labels={"value_type": "share"},
                )
            ],
            description="latest share of drifted features",
        ),
        tab="Drift",
    )
    project.dashboard.add_panel(
        line_plot_panel(
            "Share of drifted features",
            [
                PanelMetric(
                    legend="share",
                    metric="DriftedColumnsCount",
                    metric_labels={"value_type": "share"},
                )
            ],
        ),
        tab="Drift",
    )
    project.dashboard.add_panel(
        line_plot_panel(
            "Prediction drift",
            [
                PanelMetric(
                    legend=prediction_column,
                    metric="ValueDrift",
                    metric_labels={"column": prediction_column},
                )
            ],
        ),
        tab="Drift",
    )
    project.dashboard.add_panel(
        line_plot_panel(
            "Performance on feedback",
            [
                PanelMetric(legend="ROC-AUC", metric="RocAuc"),
                PanelMetric(legend="accuracy", metric="Accuracy"),
            ],
        ),
        tab="Performance",
    )


def forecast_dashboard(project: Project, prediction_column: str) -> None:
    """Forecast accuracy on realised actuals over time (Evidently's regression metrics)."""
    project.dashboard.add_panel(
        line_plot_panel(
            "Forecast error on realised actuals",
            [PanelMetric(legend="RMSE", metric="RMSE"), PanelMetric(legend="MAE", metric="MAE")],
        ),
        tab="Performance",
    )


def project_for(
    workspace_dir: Path,
    name: str,
    prediction_column: str,
    dashboard: Callable[[Project, str], None] = _dashboard,
) -> tuple[Workspace, Project]:
    """Open (or create) the workspace and the named project with its dashboard."""
    workspace_dir.mkdir(parents=True, exist_ok=True)
    ws = Workspace.create(str(workspace_dir))
    for project in ws.list_projects():
        if project.name == name:
            return ws, project
    project = ws.create_project(name, description="Drift and performance of the served champion")
    dashboard(project, prediction_column)
    logger.info("created Evidently project %r in %s", name, workspace_dir)
    return ws, project


def add_snapshots(
    workspace_dir: Path,
    project_name: str,
    prediction_column: str,
    snapshots: list[Snapshot],
    name: str | None = None,
    dashboard: Callable[[Project, str], None] = _dashboard,
) -> str:
    ws, project = project_for(workspace_dir, project_name, prediction_column, dashboard)
    for snap in snapshots:
        ws.add_run(project.id, snap, include_data=False, name=name)
    return str(project.id)


def snapshot_timestamp(snapshot: Snapshot) -> datetime | None:
    return getattr(snapshot, "timestamp", None)
