#!/usr/bin/env python3
"""Runs one DuckDB side of benches/compare.sh: the SQL files given, in one
in-memory DuckDB session (macros.sql first), with `{name}` placeholders
filled from `name=value` arguments and `{query:NAME}` with the text of
queries/NAME.sql. Prints the last statement's result.

    python3 benches/duckdb_run.py benches/duckdb/ingest.sql input=DIR out=DIR
"""
import pathlib
import re
import sys

import duckdb

files = [a for a in sys.argv[1:] if "=" not in a]
params = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
con = duckdb.connect()
# Same footing as credtrail: UTC days, every core of the machine.
con.execute("SET TimeZone = 'UTC'")
here = pathlib.Path(__file__).parent / "duckdb"
result = None
queries = here.parent.parent / "queries"
for f in [here / "macros.sql", *map(pathlib.Path, files)]:
    text = f.read_text()
    # `{query:NAME}` is credtrail's own queries/NAME.sql, run as it is.
    text = re.sub(r"\{query:(\w+)\}", lambda m: (queries / f"{m[1]}.sql").read_text().strip().rstrip(";"), text)
    for k, v in params.items():
        text = text.replace("{" + k + "}", v)
    # Statements end with `;` at the end of a line (the files are written so).
    for stmt in text.split(";\n"):
        body = "\n".join(l for l in stmt.splitlines() if not l.lstrip().startswith("--")).strip()
        if body:
            result = con.execute(body)
if result is not None:
    rows = result.fetchall()
    names = [d[0] for d in result.description or []]
    for r in rows[:5]:
        print(", ".join(f"{n}={v}" for n, v in zip(names, r)))
