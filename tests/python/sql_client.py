"""Flight SQL through ADBC (adbc_driver_flightsql from PyPI), a client nobody
here wrote, checked against pandas over pyarrow.flight DoGet snapshots.

Run by tests/sql_adbc.rs against `trimatch serve` (FLIGHT_ADDR, metrics on
METRICS_ADDR) over a broker (BROKERS, topic `invoices`), with an admin token
(ADMIN_TOKEN) and a reader token (READER_TOKEN) scoped to READER_TENANTS
(comma-separated) of TENANTS:

1. the catalog: the admin sees every collection as a table of trimatch.live,
   the reader the four tenant collections; primary keys are SPEC §3's;
2. a join and a group-by at a pinned as_of equal the same computation in
   pandas over DoGet snapshots at that as_of;
3. a prepared statement with a bound parameter counts one tenant's rows;
4. while invoices stream in, one statement's counts of invoice_matches and
   match_exceptions always agree (it reads both at one time), and the
   counts move;
5. a one-tenant query copies only that tenant's rows (the metric
   trimatch_sql_rows_scanned_total moves by exactly those);
6. INSERT, CREATE TABLE and DROP are refused as read-only; an unknown table
   names the tables, an unknown column the columns;
7. the SQL guide's example queries run (docs/guide/sql.md, named by SQL_GUIDE);
8. the reader sees only its tenants, and asking for another is refused.
"""

import json
import os
import threading
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import pandas as pd
import pyarrow.flight as flight
from adbc_driver_flightsql import DatabaseOptions
from confluent_kafka import Producer

ADDR = os.environ["FLIGHT_ADDR"]
METRICS = os.environ["METRICS_ADDR"]
BROKERS = os.environ["BROKERS"]
ADMIN = os.environ["ADMIN_TOKEN"]
READER = os.environ["READER_TOKEN"]
READER_TENANTS = set(os.environ["READER_TENANTS"].split(","))
TENANTS = os.environ["TENANTS"].split(",")
AS_OF_HEADER = DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + "x-trimatch-as-of"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def connect(token, as_of=None):
    options = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}
    if as_of is not None:
        options[AS_OF_HEADER] = str(as_of)
    return flight_sql.connect(f"grpc://{ADDR}", db_kwargs=options)


def query(connection, sql, parameters=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters=parameters)
        return cursor.fetch_arrow_table().to_pandas()


def refused(connection, sql, *words):
    try:
        query(connection, sql)
    except Exception as error:  # ADBC raises its own dbapi error classes
        text = str(error)
        for word in words:
            check(word in text, f"{sql!r} was refused with {text!r}, which does not say {word!r}")
        return text
    raise AssertionError(f"{sql!r} was not refused")


def snapshot(collection, as_of=None):
    client = flight.connect(f"grpc://{ADDR}")
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {ADMIN}".encode())])
    ticket = {"collection": collection}
    if as_of is not None:
        ticket["as_of"] = as_of
    table = client.do_get(flight.Ticket(json.dumps(ticket).encode()), options).read_all()
    return table.to_pandas(), int(table.schema.metadata[b"trimatch.as_of"])


def rows_scanned():
    with urllib.request.urlopen(f"http://{METRICS}/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith("trimatch_sql_rows_scanned_total "):
                return int(float(line.split()[1]))
    raise AssertionError("no trimatch_sql_rows_scanned_total metric")


admin = connect(ADMIN)
reader = connect(READER)

# 1. The catalog.
ALL = {"invoice_matches", "match_exceptions", "po_lines", "exception_summary", "po_suggestions",
       "payment_matches", "payment_exceptions", "payment_suggestions",
       "dead_letters", "source_progress"}
TENANT_TABLES = ALL - {"dead_letters", "source_progress"}


def tables_of(connection):
    objects = connection.adbc_get_objects(depth="tables").read_all().to_pylist()
    found = set()
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                found.add((catalog["catalog_name"], schema["db_schema_name"], table["table_name"]))
    return found


check(tables_of(admin) == {("trimatch", "live", name) for name in ALL}, tables_of(admin))
check(tables_of(reader) == {("trimatch", "live", name) for name in TENANT_TABLES}, tables_of(reader))
schema = admin.adbc_get_table_schema("po_lines", catalog_filter="trimatch", db_schema_filter="live")
check(schema.field("unit_price").type.scale == 10, schema)
print("catalog: trimatch.live lists each principal's tables")

# 2. A join and a group-by at one pinned as_of, against pandas over DoGet.
invoices, as_of = snapshot("invoice_matches")
exceptions, _ = snapshot("match_exceptions", as_of)
pinned = connect(ADMIN, as_of)
by_sql = query(pinned, """
    SELECT i.tenant_id, i.vendor_id, e.exception_type,
           count(*) AS exceptions, count(DISTINCT e.invoice_id) AS invoices,
           sum(i.invoice_amount) AS amount
    FROM match_exceptions e
    JOIN invoice_matches i ON i.tenant_id = e.tenant_id AND i.invoice_id = e.invoice_id
    GROUP BY i.tenant_id, i.vendor_id, e.exception_type
""")
joined = exceptions.merge(invoices, on=["tenant_id", "invoice_id"], suffixes=("_e", ""))
by_pandas = joined.groupby(["tenant_id", "vendor_id", "exception_type"], as_index=False).agg(
    exceptions=("invoice_id", "size"),
    invoices=("invoice_id", "nunique"),
    amount=("invoice_amount", "sum"),
)
keys = ["tenant_id", "vendor_id", "exception_type"]
left = by_sql.sort_values(keys).reset_index(drop=True)
right = by_pandas.sort_values(keys).reset_index(drop=True)
check(len(left) > 3, f"the join has too few groups to say much: {len(left)}")
check(left[keys + ["exceptions", "invoices"]].astype(str).equals(
    right[keys + ["exceptions", "invoices"]].astype(str)), f"{left}\n!=\n{right}")
check([str(a) == str(b) for a, b in zip(left["amount"], right["amount"])] == [True] * len(left),
      f"amounts differ:\n{left['amount']}\n{right['amount']}")
per_tenant = query(pinned, """
    SELECT tenant_id, count(*) AS invoices,
           sum(CASE WHEN exception_count = 0 THEN 1 ELSE 0 END) AS matched
    FROM invoice_matches GROUP BY tenant_id ORDER BY tenant_id
""")
expected = invoices.assign(matched=(invoices["exception_count"] == 0).astype(int)).groupby(
    "tenant_id", as_index=False).agg(invoices=("invoice_id", "size"), matched=("matched", "sum"))
check(per_tenant["invoices"].tolist() == expected["invoices"].tolist(), f"{per_tenant}\n{expected}")
check(per_tenant["matched"].tolist() == expected["matched"].tolist(), f"{per_tenant}\n{expected}")
print(f"join and group-by at as_of {as_of}: {len(left)} groups equal pandas over DoGet")

# 3. A prepared statement with a bound parameter.
tenant = TENANTS[1]
counted = query(pinned, "SELECT count(*) AS n FROM invoice_matches WHERE tenant_id = ?", (tenant,))
check(int(counted["n"][0]) == int((invoices["tenant_id"] == tenant).sum()), counted)
check(int(counted["n"][0]) > 0, counted)
print(f"prepared statement: {int(counted['n'][0])} invoices of {tenant}")

# 4. Consistency under ingestion: one statement, one time.
stop = threading.Event()


def produce():
    producer = Producer({"bootstrap.servers": BROKERS})
    number = 0
    while not stop.is_set():
        number += 1
        document = {
            "tenant_id": TENANTS[number % len(TENANTS)], "invoice_id": f"SQL-{number}",
            "vendor_id": "V-SQL", "invoice_number": f"SQL-{number}",
            "po_number": f"PO-NOWHERE-{number % 7}", "currency": "USD",
            "invoice_date": "2026-11-20",
            "lines": [{"po_line_no": 1, "quantity": "1", "unit_price": "9.99"}],
        }
        producer.produce("invoices", json.dumps(document).encode())
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(10)


producer = threading.Thread(target=produce)
producer.start()
seen = set()
try:
    deadline = time.time() + 20
    rounds = 0
    while time.time() < deadline and (rounds < 30 or len(seen) < 3):
        counts = query(admin, """
            SELECT (SELECT count(*) FROM invoice_matches) AS invoices,
                   (SELECT sum(exception_count) FROM invoice_matches) AS counted,
                   (SELECT count(*) FROM match_exceptions) AS exceptions
        """)
        invoices_now, counted_now, exceptions_now = (int(counts[c][0]) for c in
                                                     ["invoices", "counted", "exceptions"])
        check(counted_now == exceptions_now,
              f"sum(exception_count) {counted_now} != count(match_exceptions) {exceptions_now}")
        seen.add(invoices_now)
        rounds += 1
finally:
    stop.set()
    producer.join()
check(len(seen) >= 3, f"the counts did not move while invoices streamed in: {seen}")
print(f"consistency: {rounds} statements under ingestion agreed ({len(seen)} distinct states)")

# 5. Pushdown: a one-tenant query copies only that tenant's rows.
everything, as_of = snapshot("match_exceptions")
pinned = connect(ADMIN, as_of)
tenant = TENANTS[2]
before = rows_scanned()
one = query(pinned, f"SELECT count(*) AS n, max(detail) AS d FROM match_exceptions WHERE tenant_id = '{tenant}'")
copied = rows_scanned() - before
mine = int((everything["tenant_id"] == tenant).sum())
check(int(one["n"][0]) == mine, f"{one} vs {mine}")
check(copied == mine and mine < len(everything),
      f"a one-tenant query copied {copied} rows; the tenant has {mine} of {len(everything)}")
print(f"pushdown: {copied} rows copied for {tenant} (of {len(everything)})")

# 6. Read-only, and errors a person can act on.
refused(admin, "INSERT INTO invoice_matches (tenant_id) VALUES ('x')", "read-only")
refused(admin, "CREATE TABLE t (a INT)", "read-only")
refused(admin, "DROP TABLE invoice_matches", "read-only")
refused(admin, "SELECT * FROM invoices", "invoice_matches", "match_exceptions")
refused(admin, "SELECT amount_due FROM invoice_matches", "amount_due", "invoice_amount")
print("writes refused; unknown tables and columns named")

# The SQL guide's example queries run (docs stay true).
guide = open(os.environ["SQL_GUIDE"]).read()
section = guide[guide.index("## Three questions an AP analyst asks"):]
block = section[section.index("```sql") + len("```sql"):]
block = block[:block.index("```")]
examples = [statement.strip() for statement in block.split(";") if statement.strip()]
check(len(examples) == 3, examples)
for example in examples:
    check(len(query(pinned, example)) > 0, f"the SQL guide's query returned nothing:\n{example}")
print(f"the SQL guide's {len(examples)} example queries run")

# 7. Tenant scope.
seen_tenants = set(query(reader, "SELECT DISTINCT tenant_id FROM match_exceptions")["tenant_id"])
check(seen_tenants and seen_tenants <= READER_TENANTS, f"{seen_tenants} vs {READER_TENANTS}")
summary = query(reader, "SELECT tenant_id, sum(exception_count) AS n FROM exception_summary GROUP BY tenant_id")
check(set(summary["tenant_id"]) <= READER_TENANTS, summary)
outside = sorted(set(TENANTS) - READER_TENANTS)[0]
refused(reader, f"SELECT * FROM invoice_matches WHERE tenant_id = '{outside}'", "may read the tenants")
refused(reader, "SELECT * FROM dead_letters", "invoice_matches")
print(f"reader: only {sorted(seen_tenants)}; {outside} refused")

print("OK")
