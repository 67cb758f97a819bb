"""SPEC §12.1 and §12.4 through clients nobody here wrote: documents and a
vendor-scoped policy produced with confluent-kafka, the `preview_policy`
action and the change stream read with pyarrow.flight, and
`trimatch policy preview` (TRIMATCH_BIN) as an AP lead runs it. Run by
tests/policies_e2e.rs against `trimatch serve` (Flight on FLIGHT_ADDR)
reading the broker at BROKERS.

1. two vendors bill PO lines of two categories 4 % over the PO price:
   a PRICE_VARIANCE per line, every invoice `exception`;
2. `preview_policy` for "vendor V-1 may bill 5 % over" answers with two
   Arrow IPC streams: V-1's variances released (-1), its invoices becoming
   `matched`; nothing of V-2;
3. the same policy produced with confluent-kafka: the subscription then
   receives exactly the preview's rows, row for row, and V-2's variances
   are all that is left;
4. `trimatch policy preview` of deleting that policy prints the variances
   it would raise again and its summary line;
5. a bad policy is INVALID_ARGUMENT naming its field, and the live state
   never moved for any of the previews.
"""

import json
import os
import subprocess
import tempfile
import time

import pyarrow as pa
import pyarrow.flight as flight
from confluent_kafka import Producer

FLIGHT_ADDR = os.environ["FLIGHT_ADDR"]
BROKERS = os.environ["BROKERS"]
TRIMATCH_BIN = os.environ["TRIMATCH_BIN"]
TENANT = "py-policy"
VENDORS = ["V-1", "V-2"]

client = flight.connect(f"grpc://{FLIGHT_ADDR}")
producer = Producer({"bootstrap.servers": BROKERS})


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def send(topic, key, value):
    producer.produce(topic, key=json.dumps(key).encode(),
                     value=None if value is None else json.dumps(value).encode())
    producer.flush(30)


def read(collection):
    reader = client.do_get(flight.Ticket(json.dumps(
        {"collection": collection, "filter": {"tenant_id": TENANT}}).encode()))
    table = reader.read_all()
    as_of = int(table.schema.metadata[b"trimatch.as_of"])
    return as_of, table.to_pylist()


def wait_for_exceptions(count, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        as_of, rows = read("match_exceptions")
        if len(rows) == count:
            return as_of, rows
        time.sleep(0.2)
    raise AssertionError(f"never {count} exceptions: {rows}")


def preview(body):
    results = list(client.do_action(flight.Action("preview_policy", json.dumps(body).encode())))
    check(len(results) == 2, f"two results, got {len(results)}")
    tables = [pa.ipc.open_stream(result.body.to_pybytes()).read_all() for result in results]
    return tables[0], tables[1]


def key_of(row):
    return (row["invoice_id"], row["exception_type"], row["po_line_no"], row["_diff"])


# 1. Two vendors, two categories, every line 4 % over. ---------------------------
for number, vendor in enumerate(VENDORS, start=1):
    po = f"PO-{number}"
    send("purchase_orders", {"tenant_id": TENANT, "po_number": po},
         {"tenant_id": TENANT, "po_number": po, "vendor_id": vendor, "currency": "USD",
          "lines": [{"line_no": 1, "category": "packaging", "quantity": "100", "unit_price": "10.00"},
                    {"line_no": 2, "category": "lab-equipment", "quantity": "100",
                     "unit_price": "20.00"}]})
    send("goods_receipts", {"tenant_id": TENANT, "receipt_id": f"GR-{number}"},
         {"tenant_id": TENANT, "receipt_id": f"GR-{number}", "po_number": po,
          "lines": [{"po_line_no": 1, "quantity": "100"}, {"po_line_no": 2, "quantity": "100"}]})
    for index in range(3):
        invoice_id = f"INV-{vendor}-{index}"
        send("invoices", {"tenant_id": TENANT, "invoice_id": invoice_id},
             {"tenant_id": TENANT, "invoice_id": invoice_id, "vendor_id": vendor,
              "invoice_number": invoice_id, "po_number": po, "currency": "USD",
              "invoice_date": f"2026-11-0{index + 1}",
              "lines": [{"po_line_no": 1, "quantity": "10", "unit_price": "10.40"},
                        {"po_line_no": 2, "quantity": "10", "unit_price": "20.80"}]})
as_of, before = wait_for_exceptions(12)
check({row["exception_type"] for row in before} == {"PRICE_VARIANCE"}, before)
print("1.", len(before), "price variances at", as_of)

# 2. The preview of "V-1 may bill 5 % over". ---------------------------------------
policy = {"tenant_id": TENANT, "vendor_id": "V-1", "price_tolerance_pct": "5"}
changes, statuses = preview({"upsert": [policy]})
check(changes.schema.names[-1] == "_diff" and changes.schema.field("_diff").type == pa.int64(),
      changes.schema)
check(statuses.schema.names == ["tenant_id", "invoice_id", "status_before", "status_after"],
      statuses.schema)
rows = changes.to_pylist()
check(len(rows) == 6 and all(row["_diff"] == -1 and row["vendor_id"] == "V-1" for row in rows), rows)
check(sorted(map(key_of, rows)) == list(map(key_of, rows)), "sorted by key")
status_rows = statuses.to_pylist()
check([(row["invoice_id"], row["status_before"], row["status_after"]) for row in status_rows]
      == [(f"INV-V-1-{index}", "exception", "matched") for index in range(3)], status_rows)
check(read("match_exceptions")[1] == before, "a preview changed nothing")
print("2. preview:", len(rows), "released;", len(status_rows), "invoices become matched")

# 3. Produced: the subscription receives exactly the preview. ---------------------
as_of, _ = read("match_exceptions")
subscription = client.do_get(flight.Ticket(json.dumps(
    {"subscribe": "match_exceptions", "snapshot": False, "as_of": as_of + 1,
     "filter": {"tenant_id": TENANT}}).encode()))
send("match_policies", {"tenant_id": TENANT, "vendor_id": "V-1"}, policy)
received = []
deadline = time.time() + 60
while len(received) < len(rows) and time.time() < deadline:
    chunk = subscription.read_chunk()
    if chunk.data is not None and chunk.data.num_rows > 0:
        received.extend(chunk.data.to_pylist())
check(len(received) == len(rows), f"the subscription received {received}")
# Rows of one time, compared column for column but the time.
check(len({row.pop("_time") for row in received}) == 1, "one time")
received.sort(key=key_of)
check(received == rows, f"preview {rows}\n!= subscription {received}")
_, after = read("match_exceptions")
check(sorted(row["invoice_id"] for row in after)
      == sorted(f"INV-V-2-{index}" for index in range(3) for _ in range(2)), after)
_, invoices = read("invoice_matches")
check({row["invoice_id"]: row["status"] for row in invoices}
      == {f"INV-{vendor}-{index}": "matched" if vendor == "V-1" else "exception"
          for vendor in VENDORS for index in range(3)}, invoices)
print("3. the subscription received the preview's", len(received), "rows; V-2's 6 remain")

# 4. `trimatch policy preview` of deleting the policy again. ----------------------
with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
    json.dump({"delete": [{"vendor_id": "V-1"}]}, file)
printed = subprocess.run(
    [TRIMATCH_BIN, "policy", "preview", file.name, "--tenant", TENANT,
     "--flight-addr", FLIGHT_ADDR], capture_output=True, text=True, timeout=60)
check(printed.returncode == 0, printed.stderr)
check("0 exceptions released, 6 raised; 3 invoices become exception" in printed.stdout,
      printed.stdout)
check(printed.stdout.count("PRICE_VARIANCE") == 6, printed.stdout)
print("4. trimatch policy preview:", printed.stdout.strip().splitlines()[-1])

# 5. A bad policy is refused naming its field; nothing moved. ----------------------
try:
    preview({"upsert": [dict(policy, price_tolerance_pct="-1")]})
    raise AssertionError("a negative tolerance was previewed")
except pa.ArrowInvalid as error:
    check("upsert[0].price_tolerance_pct" in str(error), str(error))
check(read("match_exceptions")[1] == after, "the previews changed nothing")
print("5. refused:", "upsert[0].price_tolerance_pct")
print("OK")
