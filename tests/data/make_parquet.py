"""Makes tests/data/types.parquet: one column per Parquet type tapline reads, with nulls,
in two row groups. Run from the repository root with pyarrow installed:

    pip install pyarrow && python3 tests/data/make_parquet.py
"""
import datetime
import decimal

import pyarrow as pa
import pyarrow.parquet as pq

rows = 4
table = pa.table(
    {
        "identity": pa.array(["p1", "p2", "p3", "p4"], pa.string()),
        "Age": pa.array([31, None, 45, 7], pa.int32()),
        "Visits": pa.array([10_000_000_000, 2, None, 4], pa.int64()),
        "Ratio": pa.array([0.5, None, 1.25, 2.0], pa.float32()),
        "Score": pa.array([99.5, 1.0, None, -3.25], pa.float64()),
        "VIP": pa.array([True, False, None, True], pa.bool_()),
        "DOB": pa.array(
            [datetime.date(1990, 5, 1), None, datetime.date(2000, 1, 1), datetime.date(1970, 1, 2)],
            pa.date32(),
        ),
        "SeenMs": pa.array(
            [datetime.datetime(2024, 5, 1, 10, 0, 0, 250000), None, None, None], pa.timestamp("ms", tz="UTC")
        ),
        "SeenUs": pa.array([None, datetime.datetime(2024, 5, 1, 10, 0, 1), None, None], pa.timestamp("us", tz="UTC")),
        "SeenNs": pa.array([None, None, datetime.datetime(2024, 5, 1, 10, 0, 2), None], pa.timestamp("ns", tz="UTC")),
        "Balance": pa.array(
            [decimal.Decimal("12.50"), decimal.Decimal("-0.05"), None, decimal.Decimal("1000.00")],
            pa.decimal128(10, 2),
        ),
        "Interests": pa.array([["golf", "tennis"], [], None, ["chess", None]], pa.list_(pa.string())),
        "Note": pa.array([None, "hello", "", "ünïcode"], pa.string()),
    }
)
assert table.num_rows == rows
pq.write_table(table, "tests/data/types.parquet", row_group_size=2)
