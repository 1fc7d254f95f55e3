"""bench/records/count_parquet.py DIR — rows in every Parquet file under DIR (pyarrow), and the
type of `amount` in the first, for bench/records.sh."""

import pathlib
import sys

import pyarrow.parquet as pq

files = sorted(p for p in pathlib.Path(sys.argv[1]).rglob("*.parquet"))
rows = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
amount = pq.read_schema(files[0]).field("amount").type if files else "-"
print(rows, len(files), str(amount).replace(" ", ""))
