"""Shared by the gate tests."""

from __future__ import annotations

from shelfwise.configs.tasks import gate_rule, load_task


def without_baseline(task: str):
    """The shipped task's gate rule without its baseline requirement, which needs the naive
    forecasts (tested on its own in test_gate_rules.py)."""
    return gate_rule(load_task(task)).model_copy(update={"baseline": None})
