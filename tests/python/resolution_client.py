"""SPEC §6 through clients nobody here wrote: documents and an analyst's
decisions produced with confluent-kafka, the invoice's status followed with a
pyarrow.flight subscription, and `trimatch resolve` (TRIMATCH_BIN) as an
analyst runs it. Run by tests/resolutions_e2e.rs against `trimatch serve`
(Flight on FLIGHT_ADDR) reading the broker at BROKERS.

1. an invoice 0.05 over the PO price: `exception`, one PRICE_VARIANCE;
2. the buyer accepts it (confluent-kafka): `approved`, and match_exceptions
   records who and why;
3. the vendor re-invoices at another price: the acceptance lapses;
4. `trimatch resolve --accept` with the new price: `approved` again, and
   the command prints the new status;
5. the decision is withdrawn (a tombstone): `exception` again.
"""

import json
import os
import subprocess
import time

import pyarrow.flight as flight
from confluent_kafka import Producer

FLIGHT_ADDR = os.environ["FLIGHT_ADDR"]
BROKERS = os.environ["BROKERS"]
TRIMATCH_BIN = os.environ["TRIMATCH_BIN"]
TENANT = "py-resolve"

client = flight.connect(f"grpc://{FLIGHT_ADDR}")
producer = Producer({"bootstrap.servers": BROKERS})


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def send(topic, key, value):
    producer.produce(topic, key=json.dumps(key).encode(),
                     value=None if value is None else json.dumps(value).encode())
    producer.flush(30)


def invoice(price):
    return {"tenant_id": TENANT, "invoice_id": "INV-1", "vendor_id": "V-17",
            "invoice_number": "A-1", "po_number": "PO-1", "currency": "USD",
            "invoice_date": "2026-11-03",
            "lines": [{"po_line_no": 1, "quantity": "10", "unit_price": price}]}


RESOLUTION_KEY = {"tenant_id": TENANT, "invoice_id": "INV-1",
                  "exception_type": "PRICE_VARIANCE", "po_line_no": 1}

send("purchase_orders", {"tenant_id": TENANT, "po_number": "PO-1"},
     {"tenant_id": TENANT, "po_number": "PO-1", "vendor_id": "V-17", "currency": "USD",
      "lines": [{"line_no": 1, "quantity": "100", "unit_price": "2.50"}]})
send("goods_receipts", {"tenant_id": TENANT, "receipt_id": "GR-1"},
     {"tenant_id": TENANT, "receipt_id": "GR-1", "po_number": "PO-1",
      "lines": [{"po_line_no": 1, "quantity": "100"}]})

# The subscription: the tenant's invoice statuses, as they change.
subscription = client.do_get(flight.Ticket(json.dumps(
    {"subscribe": "invoice_matches", "snapshot": True, "filter": {"tenant_id": TENANT}}).encode()))
statuses = []


def wait_for_status(status, timeout=30):
    """Reads the subscription until INV-1's newest inserted row has `status`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        chunk = subscription.read_chunk()
        batch = chunk.data
        if batch is None or batch.num_rows == 0:
            continue
        rows = batch.to_pylist()
        for row in rows:
            if row["_diff"] > 0 and row["invoice_id"] == "INV-1":
                statuses.append((row["status"], row["blocking_count"], row["accepted_count"]))
        if statuses and statuses[-1][0] == status:
            return statuses[-1]
    raise AssertionError(f"INV-1 never became {status}: {statuses}")


def exception_row():
    reader = client.do_get(flight.Ticket(json.dumps(
        {"collection": "match_exceptions",
         "filter": {"tenant_id": TENANT, "invoice_id": "INV-1"}}).encode()))
    rows = reader.read_all().to_pylist()
    check(len(rows) == 1, f"one exception: {rows}")
    return rows[0]


# 1. Over the PO price: an exception. ------------------------------------------
send("invoices", {"tenant_id": TENANT, "invoice_id": "INV-1"}, invoice("2.55"))
check(wait_for_status("exception") == ("exception", 1, 0), statuses)
row = exception_row()
check(row["exception_type"] == "PRICE_VARIANCE" and row["resolution"] is None, row)
print("1. exception:", row["detail"])

# 2. The buyer accepts the variance it saw. -----------------------------------
send("exception_resolutions", RESOLUTION_KEY,
     dict(RESOLUTION_KEY, decision="accept", actual="2.55", resolved_by="j.doe",
          resolved_at="2026-11-04T10:00:00Z", reason="price increase agreed"))
check(wait_for_status("approved") == ("approved", 0, 1), statuses)
row = exception_row()
check((row["resolution"], row["resolved_by"], row["resolution_reason"])
      == ("accepted", "j.doe", "price increase agreed"), row)
check(str(row["resolved_at"]).startswith("2026-11-04 10:00:00"), row["resolved_at"])
print("2. accepted by", row["resolved_by"], "at", row["resolved_at"])

# 3. The vendor re-invoices at 2.60: the acceptance lapses. -------------------
send("invoices", {"tenant_id": TENANT, "invoice_id": "INV-1"}, invoice("2.60"))
check(wait_for_status("exception") == ("exception", 1, 0), statuses)
check(exception_row()["resolution"] == "lapsed", exception_row())
print("3. lapsed after the price moved")

# 4. `trimatch resolve` accepts the new price, and says so. -------------------
printed = subprocess.run(
    [TRIMATCH_BIN, "resolve", "--accept", "INV-1", "PRICE_VARIANCE", "--line", "1",
     "--tenant", TENANT, "--by", "a.smith", "--reason", "second increase agreed",
     "--actual", "2.60", "--brokers", BROKERS, "--flight-addr", FLIGHT_ADDR],
    capture_output=True, text=True, timeout=60)
check(printed.returncode == 0, printed.stderr)
check("accepted by a.smith" in printed.stdout and "is approved" in printed.stdout, printed.stdout)
check(wait_for_status("approved") == ("approved", 0, 1), statuses)
print("4. trimatch resolve:", printed.stdout.strip().replace("\n", " / "))

# A decision the pipeline would reject is refused before it is sent.
refused = subprocess.run(
    [TRIMATCH_BIN, "resolve", "--accept", "INV-1", "PRICE_VARIANCE_TYPO", "--tenant", TENANT,
     "--by", "a.smith", "--brokers", BROKERS, "--flight-addr", FLIGHT_ADDR],
    capture_output=True, text=True, timeout=60)
check(refused.returncode == 2 and "unknown exception type" in refused.stderr, refused.stderr)

# 5. Withdrawn (a tombstone): open again. ---------------------------------------
send("exception_resolutions", RESOLUTION_KEY, None)
check(wait_for_status("exception") == ("exception", 1, 0), statuses)
check(exception_row()["resolution"] is None, exception_row())
print("5. withdrawn:", [status for status, _, _ in statuses])
print("OK")
