"""bench/records/dlt_parquet.py — the dlt side of bench/records.sh: MariaDB table → Parquet files
in a local directory (dlt's filesystem destination), then exit.

    python dlt_parquet.py --mysql URL --table elt_source --out DIR --workdir DIR [--chunk N]

The fastest path dlt offers (the same as bench/elt/dlt_load.py): the `sql_database` source with
the ConnectorX backend streaming Arrow batches of --chunk rows, written as Parquet by pyarrow,
one file per --chunk rows.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt  # noqa: E402
from dlt.sources.sql_database import sql_table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mysql", required=True, help="mysql://user@host:port/db")
    parser.add_argument("--table", default="elt_source")
    parser.add_argument("--out", required=True, help="directory for the Parquet files")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--chunk", type=int, default=250_000)
    args = parser.parse_args()
    os.environ.setdefault("DATA_WRITER__FILE_MAX_ITEMS", str(args.chunk))

    resource = sql_table(
        credentials=args.mysql.replace("mysql://", "mysql+pymysql://", 1),
        table=args.table,
        backend="connectorx",
        backend_kwargs={"conn": args.mysql, "return_type": "arrow_stream", "batch_size": args.chunk},
        chunk_size=args.chunk,
        reflection_level="full_with_precision",
        write_disposition="append",
    )
    # ConnectorX's stream ends with an empty batch; drop it (see bench/elt/dlt_load.py).
    resource.add_filter(lambda table: table.num_rows > 0)
    pipeline = dlt.pipeline(
        pipeline_name="records_parquet",
        pipelines_dir=os.path.join(args.workdir, "pipelines"),
        destination=dlt.destinations.filesystem(bucket_url="file://" + os.path.abspath(args.out)),
        dataset_name="bench",
    )
    start = time.time()
    info = pipeline.run(resource, loader_file_format="parquet")
    info.raise_on_failed_jobs()
    print(f"dlt: {args.table} → Parquet in {args.out} in {time.time() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
