"""Tuning with and without pruning at the same trial budget: wall time and best CV ROC-AUC.

Same data, folds, seeded TPE sampler and search space (configs/tuning.yaml); only the pruner
differs (MedianPruner on per-fold reports vs none). Each arm uses a fresh SQLite study.
Writes benchmarks/results/tuning.json and tuning.md.

    python -m benchmarks.bench_tuning [--trials 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import optuna

from shelfwise.configs.datasets import load_tabular_spec
from shelfwise.configs.tasks import load_task, training_config
from shelfwise.configs.tuning import load_tuning_config
from shelfwise.models.datasets import load_tabular, stratified_split
from shelfwise.models.tabular import build_xgb_pipeline, cross_validate, features_and_target
from shelfwise.models.tune import make_objective, open_study

RESULTS = Path(__file__).resolve().parent / "results"


def _data_dir() -> Path:
    env = os.environ.get("SHELFWISE_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


def run(trials: int) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, tcfg = training_config(load_task("delay_risk")), load_tuning_config("delay_risk")
    spec = load_tabular_spec(cfg.dataset)
    df, _ = load_tabular(spec, _data_dir())
    train, _ = stratified_split(df, spec.target, cfg.split.test_size, cfg.split.seed)
    X, y = features_and_target(train, spec)
    base = cfg.xgboost.model_copy(update={"n_jobs": tcfg.n_jobs})
    folds, seed = cfg.split.cv_folds, cfg.split.seed

    t0 = time.perf_counter()
    default = cross_validate(lambda: build_xgb_pipeline(spec, base, seed), X, y, folds, seed)
    default_s = time.perf_counter() - t0

    arms = []
    with tempfile.TemporaryDirectory() as tmp:
        for pruning in (True, False):
            arm = tcfg.model_copy(
                update={"pruner": tcfg.pruner.model_copy(update={"enabled": pruning})}
            )
            study = open_study(arm, f"sqlite:///{tmp}/optuna.db", f"bench-pruning-{pruning}")
            objective = make_objective(X, y, spec, base, arm.space, folds, seed)
            t0 = time.perf_counter()
            study.optimize(objective, n_trials=trials)
            wall = time.perf_counter() - t0
            states = [t.state for t in study.trials]
            fits = sum(len(t.intermediate_values) for t in study.trials)
            arms.append(
                {
                    "pruning": pruning,
                    "trials": len(states),
                    "complete": states.count(optuna.trial.TrialState.COMPLETE),
                    "pruned": states.count(optuna.trial.TrialState.PRUNED),
                    "fold_fits": fits,
                    "wall_s": round(wall, 2),
                    "best_cv_roc_auc": round(study.best_value, 5),
                    "best_trial": study.best_trial.number,
                    "best_params": study.best_params,
                }
            )
    return {
        "benchmark": "tuning",
        "command": f"python -m benchmarks.bench_tuning --trials {trials}",
        "trials_per_arm": trials,
        "cv_folds": folds,
        "sampler": f"TPE seed {tcfg.sampler.seed}, {tcfg.sampler.n_startup_trials} start-up",
        "pruner": (
            f"MedianPruner(n_startup_trials={tcfg.pruner.n_startup_trials}, "
            f"n_warmup_steps={tcfg.pruner.n_warmup_steps}) on cumulative fold ROC-AUC"
        ),
        "xgboost_threads_per_trial": tcfg.n_jobs,
        "default_params_cv_roc_auc": round(default.mean, 5),
        "default_params_wall_s": round(default_s, 2),
        "arms": arms,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown(res: dict) -> str:
    lines = [
        "# Tuning: pruning vs no pruning (same trial budget)",
        "",
        f"`{res['command']}` on {res['date']}; {res['cv_folds']}-fold CV ROC-AUC on the "
        f"delay-risk training split; {res['sampler']}; {res['pruner']}; "
        f"{res['xgboost_threads_per_trial']} XGBoost thread per trial; "
        f"{res['machine']['cpus']} CPUs, 1-min load average {res['machine']['load_avg_1m_at_end']} "
        "at the end (shared machine: wall times are indicative).",
        "",
        "| pruning | trials | complete | pruned | fold fits | wall time (s) | best CV ROC-AUC |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a in res["arms"]:
        lines.append(
            f"| {'MedianPruner' if a['pruning'] else 'none'} | {a['trials']} | {a['complete']} | "
            f"{a['pruned']} | {a['fold_fits']} | {a['wall_s']} | {a['best_cv_roc_auc']:.4f} |"
        )
    lines += [
        "",
        f"Default parameters (configs/delay_risk.yaml), same folds: CV ROC-AUC "
        f"{res['default_params_cv_roc_auc']:.4f} in {res['default_params_wall_s']} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args(argv)
    res = run(args.trials)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tuning.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "tuning.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
