"""A real Flight SQL client for the serve tests: Apache Arrow's ADBC Flight SQL
driver through its Python DB-API, as an analyst's notebook would connect.

    python3 tests/adbc_client.py URI QUERY [--token TOKEN] [--ca FILE]

With --token the driver shakes hands with basic auth (user "analyst",
password the token) and uses the bearer token the server hands back, as
Flight SQL drivers do; --ca trusts that CA's PEM for grpc+tls:// URIs.
Prints the result as one JSON array of objects, one per row, and exits 0;
on any error prints `error: <type>: <message>` to stderr and exits 1.
Needs `adbc-driver-flightsql`, `adbc-driver-manager` and `pyarrow` (.ci/run
installs them).
"""

import argparse
import json
import sys
import warnings

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("query")
    p.add_argument("--token")
    p.add_argument("--ca")
    a = p.parse_args()
    # Flight SQL has no transactions; the driver says so on every connect.
    warnings.filterwarnings("ignore", message="Cannot disable autocommit")
    options = {}
    if a.token is not None:
        options["username"] = "analyst"
        options["password"] = a.token
    if a.ca is not None:
        with open(a.ca) as f:
            options[adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value] = f.read()
    try:
        with adbc_driver_flightsql.dbapi.connect(a.uri, db_kwargs=options) as conn:
            with conn.cursor() as cur:
                cur.execute(a.query)
                rows = cur.fetch_arrow_table().to_pylist()
    except Exception as e:  # every failure is the test's evidence: type and message
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump(rows, sys.stdout, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
