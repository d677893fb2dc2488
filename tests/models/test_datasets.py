from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.datasets import load_tabular_spec, load_timeseries_spec
from shelfwise.models.datasets import (
    DatasetError,
    fingerprint,
    load_tabular,
    load_timeseries,
    read_table,
    stratified_split,
    validate_tabular,
    validate_timeseries,
)


@pytest.fixture(scope="module")
def spec():
    return load_tabular_spec("ecommerce_shipping")


@pytest.fixture(scope="module")
def shipping(spec, data_dir):
    df, _ = load_tabular(spec, data_dir)
    return df


def test_reads_real_file_with_bom(shipping, spec) -> None:
    assert len(shipping) == 10_999
    assert "ID" in shipping.columns  # not "\ufeffID"
    assert set(shipping[spec.target].unique()) == {0, 1}
    assert shipping[spec.target].sum() == 6_563


def test_missing_column_named(tmp_path: Path, shipping, spec) -> None:
    p = tmp_path / "bad.csv"
    shipping.drop(columns=["Weight_in_gms"]).to_csv(p, index=False)
    with pytest.raises(DatasetError) as exc:
        validate_tabular(read_table(p, "csv"), spec, p)
    assert "Weight_in_gms" in str(exc.value) and str(p) in str(exc.value)


def test_wrong_type_names_column_and_row(tmp_path: Path, shipping, spec) -> None:
    bad = shipping.copy()
    bad["Cost_of_the_Product"] = bad["Cost_of_the_Product"].astype(object)
    bad.loc[41, "Cost_of_the_Product"] = "cheap"
    p = tmp_path / "bad.csv"
    bad.to_csv(p, index=False)
    with pytest.raises(DatasetError) as exc:
        validate_tabular(read_table(p, "csv"), spec, p)
    msg = str(exc.value)
    assert "Cost_of_the_Product" in msg and "row 42" in msg and "cheap" in msg


def test_missing_value_and_bad_target(tmp_path: Path, shipping, spec) -> None:
    bad = shipping.copy()
    bad.loc[9, "Gender"] = None
    p = tmp_path / "nan.csv"
    bad.to_csv(p, index=False)
    with pytest.raises(DatasetError, match=r"'Gender'.*row 10"):
        validate_tabular(read_table(p, "csv"), spec, p)
    bad = shipping.copy()
    bad.loc[3, spec.target] = 7
    p = tmp_path / "target.csv"
    bad.to_csv(p, index=False)
    with pytest.raises(DatasetError, match=r"0/1.*row 4"):
        validate_tabular(read_table(p, "csv"), spec, p)


def _policy(**kw):
    from shelfwise.configs.tasks import DataPolicy

    return DataPolicy(**kw)


def test_missing_values_follow_the_task_policy(tmp_path: Path, shipping, spec) -> None:
    bad = shipping.copy()
    bad.loc[[20, 30], "Weight_in_gms"] = np.nan
    bad.loc[5, "Gender"] = None
    p = tmp_path / "gaps.csv"
    bad.to_csv(p, index=False)
    with pytest.raises(DatasetError, match=r"'Gender' has a missing value at row 6 .*'error'"):
        validate_tabular(read_table(p, "csv"), spec, p, policy=_policy(missing="error"))
    report: dict[str, int] = {}
    kept = validate_tabular(read_table(p, "csv"), spec, p, policy=_policy(), report=report)
    assert kept["Weight_in_gms"].isna().sum() == 2
    assert kept.loc[5, "Gender"] == "__missing__"
    assert report == {"missing:Gender": 1, "missing:Weight_in_gms": 2}


def test_boolean_words_are_parsed_and_other_words_refused(tmp_path: Path) -> None:
    from shelfwise.configs.datasets import TabularDatasetSpec

    spec = TabularDatasetSpec(name="t", path="t.csv", target="bought", numeric=["visits", "member"])
    df = pd.DataFrame(
        {
            "visits": [1, 2, 3, 4],
            "member": ["Y", "n", "N", "y"],
            "bought": ["TRUE", "false", "yes", "No"],
        }
    )
    p = tmp_path / "t.csv"
    report: dict[str, int] = {}
    out = validate_tabular(df, spec, p, report=report)
    assert out["bought"].tolist() == [1, 0, 1, 0] and out["member"].tolist() == [1, 0, 0, 1]
    assert report == {"boolean_words:member": 4, "boolean_words:bought": 4}
    df.loc[2, "bought"] = "maybe"
    with pytest.raises(DatasetError, match=r"'bought' must be 0/1 .*row 3 has 'maybe'"):
        validate_tabular(df, spec, p)
    df.loc[2, "bought"] = "no"
    df.loc[3, "member"] = "sometimes"
    with pytest.raises(DatasetError, match=r"'member' must be numeric or booleans.*row 4"):
        validate_tabular(df, spec, p)


def test_regression_target_and_negative_policy(tmp_path: Path) -> None:
    from shelfwise.configs.datasets import TabularDatasetSpec

    spec = TabularDatasetSpec(name="t", path="t.csv", target="sales", numeric=["price"])
    df = pd.DataFrame({"price": [1.0, 2.0, 3.0], "sales": [5.0, -2.0, 7.5]}, dtype=object)
    p = tmp_path / "t.csv"
    with pytest.raises(DatasetError, match=r"'sales' has a negative value at row 2"):
        validate_tabular(df, spec, p, "regression", _policy(negative_target="error"))
    report: dict[str, int] = {}
    out = validate_tabular(df, spec, p, "regression", _policy(negative_target="clip"), report)
    assert out["sales"].tolist() == [5.0, 0.0, 7.5] and report == {
        "negative_target_clipped:sales": 1
    }
    kept = validate_tabular(df, spec, p, "regression", _policy())
    assert kept["sales"].tolist() == [5.0, -2.0, 7.5]
    df.loc[2, "sales"] = "lots"
    with pytest.raises(DatasetError, match=r"'sales' must be numeric; row 3 has 'lots'"):
        validate_tabular(df, spec, p, "regression", _policy())


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="empty"):
        read_table(empty, "csv")
    header = tmp_path / "header.csv"
    header.write_text("a,b\n")
    with pytest.raises(DatasetError, match="no data rows"):
        read_table(header, "csv")
    with pytest.raises(DatasetError, match="not found"):
        read_table(tmp_path / "missing.csv", "csv")


def test_split_is_stratified_shuffled_and_seeded(shipping, spec) -> None:
    train, test = stratified_split(shipping, spec.target, 0.2, 42)
    assert len(test) == pytest.approx(0.2 * len(shipping), abs=1)
    overall = shipping[spec.target].mean()
    assert abs(train[spec.target].mean() - overall) < 0.002
    assert abs(test[spec.target].mean() - overall) < 0.002
    # the file is ordered by ID; a shuffled test set spans the whole range
    assert test["ID"].min() < 500 and test["ID"].max() > 10_500
    assert not np.all(np.diff(test["ID"].to_numpy()) > 0)
    again, _ = stratified_split(shipping, spec.target, 0.2, 42)
    pd.testing.assert_frame_equal(train, again)
    other, _ = stratified_split(shipping, spec.target, 0.2, 7)
    assert not train["ID"].equals(other["ID"])


def test_fingerprint_is_content_sensitive(shipping) -> None:
    a = fingerprint(shipping)
    assert a == fingerprint(shipping.copy())
    changed = shipping.copy()
    changed.loc[0, "Discount_offered"] += 1
    assert fingerprint(changed) != a


def test_timeseries_specs_load_real_files(data_dir) -> None:
    spec = load_timeseries_spec("walmart_weekly")
    df, _ = load_timeseries(spec, data_dir)
    assert df[spec.time_column].dt.year.min() == 2010
    assert df["Store"].nunique() == 45


def test_timeseries_errors_name_column_and_row(tmp_path: Path) -> None:
    # the original Walmart CSV export: dates as DD-MM-YYYY text
    spec = load_timeseries_spec("walmart_weekly").model_copy(
        update={"format": "csv", "date_format": "%d-%m-%Y"}
    )
    base = {
        "Store": [1, 1],
        "Date": ["05-02-2010", "12-02-2010"],
        "Weekly_Sales": [10.0, 11.0],
        "Holiday_Flag": [0, 1],
        "Temperature": [1.0, 2.0],
        "Fuel_Price": [2.5, 2.6],
        "CPI": [211.0, 211.1],
        "Unemployment": [8.1, 8.1],
    }
    p = tmp_path / "w.csv"
    bad_date = pd.DataFrame({**base, "Date": ["05-02-2010", "2010-02-12"]})
    with pytest.raises(DatasetError, match=r"'Date' row 2 .*%d-%m-%Y"):
        validate_timeseries(bad_date, spec, p)
    neg = pd.DataFrame({**base, "Weekly_Sales": [10.0, -1.0]})
    with pytest.raises(DatasetError, match=r"negative value at row 2"):
        validate_timeseries(neg, spec, p)
    dup = pd.DataFrame({**base, "Date": ["05-02-2010", "05-02-2010"]})
    with pytest.raises(DatasetError, match=r"duplicate .* row 2"):
        validate_timeseries(dup, spec, p)
