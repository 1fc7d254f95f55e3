"""bench/elt/dlt_load.py — the dlt side of bench/elt.sh: one load into PostgreSQL, then exit.

    python dlt_load.py csv     --csv FILE     --pg URL --dataset SCHEMA --table NAME
    python dlt_load.py mariadb --mysql URL    --pg URL --dataset SCHEMA --table NAME

The fastest configuration found for dlt on this data (see bench/elt.sh):
- Arrow end to end: the CSV is read as a stream of Arrow record batches (pyarrow.csv with the
  column types given), the MariaDB table through the `sql_database` source with the ConnectorX
  backend in streaming mode (`arrow_stream`, batches of --chunk rows); no Python object per row.
- Loader file format `parquet` (--format), loaded by dlt's ADBC job (adbc-driver-postgresql,
  binary COPY); `csv` (PostgreSQL COPY from a CSV file dlt writes) is the alternative.
- Files rotate every --chunk rows so the load step copies several files in parallel.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

COLUMN_TYPES = {
    "id": pa.int32(),
    "name": pa.string(),
    "email": pa.string(),
    "amount": pa.decimal128(12, 2),
    "created": pa.date32(),
    "active": pa.bool_(),
    "note": pa.string(),
}


def csv_batches(path: str, chunk: int):
    """The CSV as Arrow tables of about `chunk` rows, read as a stream (bounded memory)."""
    reader = pacsv.open_csv(
        path,
        # ~120 bytes per row
        read_options=pacsv.ReadOptions(block_size=max(1 << 20, chunk * 128)),
        convert_options=pacsv.ConvertOptions(
            column_types=COLUMN_TYPES,
            true_values=["true"],
            false_values=["false"],
            strings_can_be_null=True,
        ),
    )
    for batch in reader:
        yield pa.Table.from_batches([batch])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", choices=["csv", "mariadb"])
    parser.add_argument("--csv")
    parser.add_argument("--mysql", help="mysql://user@host:port/db")
    parser.add_argument("--source-table", default="elt_source")
    parser.add_argument("--pg", required=True, help="postgresql://user@host:port/db?sslmode=disable")
    parser.add_argument("--dataset", required=True, help="target schema")
    parser.add_argument("--table", required=True)
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv", "insert_values"])
    parser.add_argument("--backend", default="connectorx", choices=["connectorx", "pyarrow"])
    parser.add_argument("--chunk", type=int, default=250_000)
    parser.add_argument("--workdir", default=".")
    args = parser.parse_args()

    # One file per chunk, so the load step has several files to copy in parallel.
    os.environ.setdefault("DATA_WRITER__FILE_MAX_ITEMS", str(args.chunk))
    os.environ.setdefault("LOAD__WORKERS", "2")

    if args.source == "csv":
        resource = dlt.resource(
            csv_batches(args.csv, args.chunk), name=args.table, write_disposition="append"
        )
    else:
        from dlt.sources.sql_database import sql_table

        if args.backend == "connectorx":
            backend_kwargs = {
                "conn": args.mysql,
                "return_type": "arrow_stream",
                "batch_size": args.chunk,
            }
        else:
            backend_kwargs = None
        resource = sql_table(
            credentials=args.mysql.replace("mysql://", "mysql+pymysql://", 1),
            table=args.source_table,
            backend=args.backend,
            backend_kwargs=backend_kwargs,
            chunk_size=args.chunk,
            reflection_level="full_with_precision",
            write_disposition="append",
        )
        resource.apply_hints(table_name=args.table)
        # ConnectorX's stream ends with an empty batch; when it falls on a file rotation (ROWS a
        # multiple of --chunk) dlt writes an empty parquet file and the ADBC load job fails on it
        # ("Must pass schema, or at least one RecordBatch"), retrying forever. Drop empty batches.
        resource.add_filter(lambda table: table.num_rows > 0)

    pg = args.pg
    if "@" in pg and ":" not in pg.split("://", 1)[1].split("@", 1)[0]:
        # dlt insists on a password; with trust auth the server ignores it.
        pg = pg.replace("@", ":unused@", 1)
    pipeline = dlt.pipeline(
        pipeline_name=f"elt_{args.source}",
        pipelines_dir=os.path.join(args.workdir, "pipelines"),
        destination=dlt.destinations.postgres(credentials=pg),
        dataset_name=args.dataset,
    )
    start = time.time()
    info = pipeline.run(resource, loader_file_format=args.format)
    info.raise_on_failed_jobs()
    print(
        f"dlt: {args.source} → {args.dataset}.{args.table} ({args.format}) in {time.time() - start:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
