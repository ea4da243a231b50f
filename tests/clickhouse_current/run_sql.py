"""Runs SQL statements on chdb, the current ClickHouse engine in-process, for
tests/clickhouse_current.rs (started with $BXB_TOOLS_BIN/chdb-python, see dev/install).

Reads {"statements": [{"sql": text, "params": {name: text} or null}, ...]} as JSON on stdin,
runs them in order in one fresh session with its own temporary directory, and prints
{"version": text, "results": [{"output": text} or {"error": text}, ...]} as JSON on stdout.
Outputs are TabSeparatedRaw; `params` fill the {name:Type} query parameters, as
clickhouse-client --param_name does. Nothing runs after the first error.
"""

import json
import shutil
import sys
import tempfile

from chdb import session


def run(statements):
    directory = tempfile.mkdtemp(prefix="bxb-chdb-")
    try:
        conn = session.Session(directory)
        try:
            version = conn.query("SELECT version()", "TabSeparatedRaw").bytes().decode().strip()
            results = []
            for statement in statements:
                try:
                    result = conn.query(statement["sql"], "TabSeparatedRaw", params=statement.get("params"))
                except Exception as error:  # chdb raises ChdbError, RuntimeError or TypeError
                    results.append({"error": str(error)})
                    break
                results.append({"output": result.bytes().decode()})
            return {"version": version, "results": results}
        finally:
            conn.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)["statements"]), sys.stdout)
