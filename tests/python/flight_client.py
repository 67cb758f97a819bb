"""trimatch's Arrow Flight service through pyarrow.flight, a client nobody here wrote.

Run by tests/pyarrow_client.rs with a running trimatch (Flight on FLIGHT_ADDR),
its Kafka broker (BROKERS) and the trimatch binary (TRIMATCH_BIN):

1. a filtered snapshot and its metadata;
2. the same rows from `read_pandas()` as `trimatch query match_exceptions` prints;
3. a subscription: produce a document to Kafka and see the change arrive;
   disconnect, produce more, resume from the last progress time, and check that
   no change is missing or repeated.
"""

import json
import os
import subprocess
import sys
import time
from decimal import Decimal

import pyarrow.flight as flight
from confluent_kafka import Producer

FLIGHT_ADDR = os.environ["FLIGHT_ADDR"]
BROKERS = os.environ["BROKERS"]
TRIMATCH_BIN = os.environ["TRIMATCH_BIN"]
TENANT = "py-tenant"

client = flight.connect(f"grpc://{FLIGHT_ADDR}")


def ticket(obj):
    return flight.Ticket(json.dumps(obj).encode())


def check(condition, message):
    if not condition:
        raise AssertionError(message)


# 1. A filtered snapshot and its metadata. -----------------------------------
reader = client.do_get(ticket({"collection": "match_exceptions",
                               "filter": {"tenant_id": "tenant-001", "severity": "blocking"}}))
table = reader.read_all()
metadata = table.schema.metadata
check(b"trimatch.as_of" in metadata and b"trimatch.offsets" in metadata, f"metadata: {metadata}")
as_of = int(metadata[b"trimatch.as_of"])
offsets = json.loads(metadata[b"trimatch.offsets"])
check(len(offsets) > 0 and all("/" in key for key in offsets), f"offsets: {offsets}")
check(table.num_rows > 0, "the filtered snapshot has rows")
check(set(table.column("tenant_id").to_pylist()) == {"tenant-001"}, "filter on tenant_id")
check(set(table.column("severity").to_pylist()) == {"blocking"}, "filter on severity")
check(str(table.schema.field("expected").type) == "decimal128(38, 10)", table.schema.field("expected").type)
print(f"filtered snapshot: {table.num_rows} rows as of {as_of}")

# 2. read_pandas() and `trimatch query` agree, at one time. --------------------
reader = client.do_get(flight.Ticket(b"match_exceptions"))
frame = reader.read_pandas()
as_of = int(reader.schema.metadata[b"trimatch.as_of"]) if reader.schema.metadata else as_of
# The reader's schema carries the metadata; query the CLI at the same time.
printed = subprocess.run(
    [TRIMATCH_BIN, "query", "match_exceptions", "--format", "json", "--as-of", str(as_of),
     "--flight-addr", FLIGHT_ADDR],
    check=True, capture_output=True, text=True).stdout


def normalized(value):
    if value is None or (isinstance(value, float) and value != value):
        return "<null>"
    if isinstance(value, Decimal):
        return str(value.normalize()) if value != 0 else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def key(row):
    return tuple(normalized(row[column]) for column in
                 ["tenant_id", "invoice_id", "po_number", "vendor_id", "po_line_no", "exception_type",
                  "severity", "expected", "actual", "detail"])


from_pandas = sorted(key(row) for row in frame.astype(object).where(frame.notna(), None).to_dict("records"))
from_cli = sorted(key({k: (Decimal(v) if k in ("expected", "actual") and v is not None else v)
                       for k, v in json.loads(line).items()})
                  for line in printed.splitlines() if line.strip())
check(len(from_pandas) > 0, "match_exceptions has rows")
check(from_pandas == from_cli,
      f"pandas and `trimatch query` differ: {len(from_pandas)} vs {len(from_cli)} rows; "
      f"first differences: {[r for r in from_pandas if r not in from_cli][:3]} / "
      f"{[r for r in from_cli if r not in from_pandas][:3]}")
print(f"read_pandas() == trimatch query: {len(from_pandas)} rows as of {as_of}")

# 3. Subscribe, produce, see it; disconnect, produce, resume. -----------------
producer = Producer({"bootstrap.servers": BROKERS})


def send(topic, key_fields, document):
    producer.produce(topic, key=json.dumps(key_fields), value=None if document is None else json.dumps(document))
    producer.flush(30)


def po(number, price):
    return {"tenant_id": TENANT, "po_number": number, "vendor_id": "V-1", "currency": "USD",
            "receipt_required": False,
            "lines": [{"line_no": 1, "quantity": "10", "unit_price": price}]}


def invoice(invoice_id, price, status="active"):
    return {"tenant_id": TENANT, "invoice_id": invoice_id, "vendor_id": "V-1", "invoice_number": invoice_id,
            "po_number": "PO-PY-1", "currency": "USD", "invoice_date": "2026-11-03", "status": status,
            "lines": [{"po_line_no": 1, "quantity": "5", "unit_price": price}]}


def follow(reader, until, changes):
    """Reads chunks until `until(changes)` holds at a progress message; returns the last progress."""
    last_progress = None
    deadline = time.time() + 60
    while time.time() < deadline:
        chunk = reader.read_chunk()
        if chunk.app_metadata is not None:
            progress = json.loads(chunk.app_metadata.to_pybytes())["progress"]
            check(last_progress is None or progress > last_progress, "progress only moves forward")
            last_progress = progress
            if until(changes):
                return last_progress
            continue
        batch = chunk.data
        for row in batch.to_pylist():
            changes.append((row["invoice_id"], row["status"], row["_time"], row["_diff"]))
    raise AssertionError(f"timed out; changes so far: {changes}")


def state_of(changes):
    counts = {}
    for invoice_id, status, _, diff in changes:
        counts[(invoice_id, status)] = counts.get((invoice_id, status), 0) + diff
    return {key: count for key, count in counts.items() if count != 0}


subscription = {"subscribe": "invoice_matches", "filter": {"tenant_id": TENANT}}
changes = []
reader = client.do_get(ticket(subscription))
send("purchase_orders", {"tenant_id": TENANT, "po_number": "PO-PY-1"}, po("PO-PY-1", "2.50"))
send("invoices", {"tenant_id": TENANT, "invoice_id": "INV-PY-1"}, invoice("INV-PY-1", "2.50"))
progress = follow(reader, lambda c: ("INV-PY-1", "matched") in state_of(c), changes)
print(f"saw INV-PY-1 matched; progress {progress}")
reader.cancel()

# While disconnected: a price variance appears on INV-PY-1, INV-PY-2 arrives.
send("invoices", {"tenant_id": TENANT, "invoice_id": "INV-PY-1"}, invoice("INV-PY-1", "2.60"))
send("invoices", {"tenant_id": TENANT, "invoice_id": "INV-PY-2"}, invoice("INV-PY-2", "2.50"))
resumed = []
reader = client.do_get(ticket(dict(subscription, snapshot=False, as_of=progress)))
wanted = {("INV-PY-1", "exception"): 1, ("INV-PY-2", "matched"): 1}
end = follow(reader, lambda c: state_of(changes + c) == wanted, resumed)
reader.cancel()
check(all(change[2] >= progress for change in resumed), f"a change before the resume point: {resumed}")

state = state_of(changes + resumed)
check(all(count == 1 for count in state.values()), f"a change was repeated: {state}")
snapshot = client.do_get(ticket({"collection": "invoice_matches", "as_of": end - 1,
                                 "filter": {"tenant_id": TENANT}})).read_all().to_pylist()
expected = {(row["invoice_id"], row["status"]): 1 for row in snapshot}
check(state == expected, f"subscription state {state} != snapshot {expected}")
check(state == wanted, f"state: {state}")
print(f"resumed from {progress} to {end}: {len(resumed)} changes, nothing missing or repeated")
print("OK")
