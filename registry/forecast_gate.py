"""The promotion gate for forecasters: champion and challenger on the same rows.

The evaluation set is a holdout of the challenger's backtest (``gate/holdout.csv``, stored with
the version's run together with the baselines' forecasts for the same rows): every series, the
rows after a fold's origin, with the actuals. The challenger's forecasts there come from its
recipe fitted on the data up to the origin (a backtest fold model; the registered version itself
trained on those rows). Which fold:

* the latest regular fold (origin = the data's last date minus ``horizon``), normally;
* the *gate fold* (models/backtest.py, ``gate_origin``) when the champion's training data ends
  at ``E`` after that origin but before the challenger's last date: a frequent (e.g. nightly)
  retrain, champion trained up to ``E``, challenger up to ``E + k`` with ``k < horizon``. The
  training flow then fits the challenger's recipe on the data up to exactly ``E`` and the holdout
  is the realised rows ``(E, E + k]``, which neither the champion nor that fold model saw.

The champion is scored through its registered pyfunc on the same (series, date) rows. That is
only fair when it never saw them and can forecast them: its training data must end at or before
the origin and its forecast window must cover the holdout (``champion_comparable``). Both cases
above meet this by construction; otherwise (e.g. the champion trained on later data than the
challenger, or the champion changed after the challenger was trained) the gate refuses (fail
closed) and says why. A short realised window is judged as honestly as a long one (the bootstrap
resamples whole series, rows of one series are not independent), but a window of fewer than the
rule's ``min_eval_periods`` dates is refused (``eval_periods``): a day or two of one week says
little about a weekly-seasonal forecaster.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd

from shelfwise.configs.gate import GateRule
from shelfwise.models.backtest import HYBRID, SEASONAL_NAIVE, BacktestResult
from shelfwise.models.datasets import fingerprint
from shelfwise.registry.aliases import CHAMPION, alias_version, resolve_version
from shelfwise.registry.gate import Check, GateDecision, GateError, decide
from shelfwise.registry.model_code import load_pyfunc

logger = logging.getLogger(__name__)

HOLDOUT_ARTIFACT = "gate/holdout.csv"
TAG_DATA_END = "shelfwise.data_end"  # last date of the version's training data
TAG_WINDOW_END = "shelfwise.forecast_window_end"  # last date its pyfunc can forecast
TAG_HORIZON = "shelfwise.horizon"
TAG_GATE_ORIGIN = "shelfwise.gate_origin"  # the gate fold's origin (set only when there is one)
TAG_FORECAST_FAMILY = "shelfwise.family"  # the family that won the backtest and was registered
CHALLENGER_COLUMN = "challenger_family"  # holdout column: whose forecasts ``yhat`` are
NAIVE_FAMILY = SEASONAL_NAIVE  # a forecast task's first version must beat it


@dataclass(frozen=True)
class ForecastEvalSet:
    """Holdout rows (key columns, ``ds``, ``y``, ``sid``) with the challenger's and the
    baselines' forecasts as columns ``yhat.<family>``; ``family`` is the challenger's."""

    frame: pd.DataFrame
    key_columns: list[str]
    origin: pd.Timestamp
    fingerprint: str
    family: str = HYBRID

    @property
    def y(self) -> np.ndarray:
        return self.frame["y"].to_numpy(dtype=float)

    @property
    def groups(self) -> np.ndarray:
        return self.frame["sid"].to_numpy()

    def forecasts(self, family: str) -> np.ndarray:
        return self.frame[f"yhat.{family}"].to_numpy(dtype=float)

    @property
    def baseline_families(self) -> list[str]:
        fams = [c.removeprefix("yhat.") for c in self.frame.columns if c.startswith("yhat.")]
        return [f for f in fams if f != self.family]


def champion_data_end(client: mlflow.MlflowClient, model_name: str) -> pd.Timestamp | None:
    """The last training date of ``@champion`` (its ``shelfwise.data_end`` tag); None when the
    model, the alias or the tag does not exist (no gate fold then: the gate decides as before)."""
    version = alias_version(client, model_name, CHAMPION)
    if version is None:
        return None
    end = resolve_version(client, model_name, version).tags.get(TAG_DATA_END)
    return pd.Timestamp(end) if end else None


def holdout_frame(
    result: BacktestResult, key_columns: list[str], family: str = HYBRID
) -> pd.DataFrame:
    """The gate's rows (the gate fold's when there is one, else the latest fold's), one per
    (series, date), forecasts of each family as columns; ``family`` is the challenger's."""
    f = result.gate_forecasts()
    wide = f.pivot_table(index=["sid", "ds"], columns="family", values="yhat", dropna=False)
    wide.columns = [f"yhat.{c}" for c in wide.columns]
    truth = f[f["family"] == family][["sid", *key_columns, "ds", "y", "origin"]]
    out = truth.merge(wide.reset_index(), on=["sid", "ds"], how="left")
    out[CHALLENGER_COLUMN] = family
    return out.sort_values(["sid", "ds"]).reset_index(drop=True)


def eval_fingerprint(frame: pd.DataFrame, key_columns: list[str]) -> str:
    """Identity of the evaluation rows: series keys, dates and actuals."""
    cols = [*key_columns, "ds", "y"]
    return fingerprint(frame[cols].sort_values(cols[:-1]).reset_index(drop=True))


def eval_set_from_frame(frame: pd.DataFrame, key_columns: list[str]) -> ForecastEvalSet:
    frame = frame.copy()
    frame["ds"] = pd.to_datetime(frame["ds"])
    origin = pd.Timestamp(pd.to_datetime(frame["origin"]).iloc[0])
    family = str(frame[CHALLENGER_COLUMN].iloc[0]) if CHALLENGER_COLUMN in frame else HYBRID
    return ForecastEvalSet(frame, key_columns, origin, eval_fingerprint(frame, key_columns), family)


def load_eval_set(client: mlflow.MlflowClient, run_id: str, key_columns: list[str]):
    """The evaluation set stored with a version's training run."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, HOLDOUT_ARTIFACT, tmp)
        except Exception as exc:
            raise GateError(
                f"run {run_id} has no {HOLDOUT_ARTIFACT}: not trained by train-forecast "
                f"with gate support ({exc})"
            ) from exc
        return eval_set_from_frame(pd.read_csv(path), key_columns)


def comparable_rows(
    eval_set: ForecastEvalSet, data_end: str | None, window_end: str | None
) -> tuple[Check, ForecastEvalSet | None]:
    """May the champion's registered forecasts be scored on ``eval_set``, and on which rows?

    It must not have trained on any holdout row (its data ends at or before the origin) and its
    forecast window must reach into the holdout; the rows its window covers are the evaluation
    set for both versions (all of them when it was trained up to the origin)."""
    name = "champion_comparable"
    if not data_end or not window_end:
        return Check(
            name,
            False,
            f"champion lacks {TAG_DATA_END}/{TAG_WINDOW_END} tags: cannot tell whether it "
            "trained on the gate's holdout",
        ), None
    end, wend = pd.Timestamp(data_end), pd.Timestamp(window_end)
    first, last = eval_set.frame["ds"].min(), eval_set.frame["ds"].max()
    if end > eval_set.origin:
        return Check(
            name,
            False,
            f"champion trained on data up to {end.date()}, after the gate's origin "
            f"{eval_set.origin.date()}: it saw the holdout {first.date()} .. {last.date()}",
        ), None
    if wend < first:
        return Check(
            name,
            False,
            f"champion's forecast window ended {wend.date()}, before the holdout starts "
            f"{first.date()}: it has no forecast to compare",
        ), None
    rows = eval_set.frame[eval_set.frame["ds"] <= wend].reset_index(drop=True)
    restricted = ForecastEvalSet(
        rows,
        eval_set.key_columns,
        eval_set.origin,
        eval_fingerprint(rows, eval_set.key_columns),
        eval_set.family,
    )
    return Check(
        name,
        True,
        f"champion trained up to {end.date()} <= origin {eval_set.origin.date()}; both scored on "
        f"{len(rows)} rows {first.date()} .. {min(wend, last).date()} of the challenger's holdout",
    ), restricted


def check_eval_periods(eval_set: ForecastEvalSet, minimum: int | None) -> Check:
    """The evaluation set must span at least ``minimum`` distinct dates (None: no minimum)."""
    ds = eval_set.frame["ds"]
    n = int(ds.nunique())
    span = f"{n} date(s) {ds.min().date()} .. {ds.max().date()}" if n else "no dates"
    if minimum is None or n >= minimum:
        return Check("eval_periods", True, f"evaluation set spans {span}")
    return Check(
        "eval_periods",
        False,
        f"evaluation set spans only {span} after origin {eval_set.origin.date()}; the rule "
        f"needs at least {minimum} (min_eval_periods): too few realised periods to compare, "
        "gate again once more actuals have arrived",
    )


def score_forecaster(model_uri: str, eval_set: ForecastEvalSet) -> np.ndarray:
    """A registered forecaster's ``yhat`` for every (series, date) row of ``eval_set``."""
    keys = eval_set.key_columns
    try:
        model = load_pyfunc(model_uri)
    except Exception as exc:
        raise GateError(f"cannot load {model_uri}: {exc}") from exc
    request = eval_set.frame[keys].assign(date=eval_set.frame["ds"])
    out = model.predict(request)
    out = out.assign(date=pd.to_datetime(out["date"]))
    merged = request.merge(out[[*keys, "date", "yhat"]], on=[*keys, "date"], how="left")
    if len(merged) != len(request) or merged["yhat"].isna().any():
        raise GateError(f"{model_uri} did not forecast every row of the evaluation set")
    return merged["yhat"].to_numpy(dtype=float)


def decide_forecast(
    rule: GateRule,
    eval_set: ForecastEvalSet,
    champion_pred: np.ndarray | None,
    candidate_version: str,
    champion_version: str | None,
    comparable: Check | None,
    fresher: bool = False,
    baselines: dict[str, np.ndarray] | None = None,
    naive: str | None = None,
) -> GateDecision:
    """Apply the rule: challenger = its backtest fold forecasts, champion = its pyfunc on the
    same rows (None when there is no champion, or it is not comparable: then ``comparable``
    fails and nothing is promoted). ``fresher``: the challenger trained on later data than
    the champion (the rule's non-inferiority margin then applies). A comparison with a champion
    also needs ``rule.min_eval_periods`` dates in the evaluation set. ``baselines`` (default:
    every other family's backtest forecasts on the rows) are reported; ``naive`` names the one
    the rule's ``baseline`` requirement means (the first version must beat it)."""
    extra = [comparable] if comparable is not None else []
    if champion_pred is not None:
        extra.append(check_eval_periods(eval_set, rule.min_eval_periods))
    return decide(
        rule,
        eval_set.y,
        eval_set.forecasts(eval_set.family),
        champion_pred,
        candidate_version,
        champion_version,
        eval_set.fingerprint,
        eval_set.fingerprint,  # the challenger's forecasts are on this set by construction
        eval_set.fingerprint if champion_pred is not None else None,
        groups=eval_set.groups,
        extra_checks=extra or None,
        baselines=(
            baselines
            if baselines is not None
            else {f: eval_set.forecasts(f) for f in eval_set.baseline_families}
        ),
        naive=naive,
        fresher=fresher,
    )
