"""trimatch's security through pyarrow.flight, a client nobody here wrote.

Run by tests/security.rs against `trimatch serve` over TLS (FLIGHT_URL, with
the test CA in CA_FILE) with an API token (TOKEN) of a reader named USER_NAME
scoped to TENANT:

1. a Basic handshake (authenticate_basic_token) gives a bearer token;
2. DoGet with it returns TENANT's rows only, with trimatch.as_of;
3. Basic credentials without their base64 padding (as Go clients send them)
   are accepted on a call;
4. a subscription with the session token: the snapshot is TENANT's, and a
   document produced to Kafka for TENANT arrives as a change;
5. asking for OTHER_TENANT is refused (FlightUnauthorizedError); a wrong
   password and no credentials are FlightUnauthenticatedError;
6. a client that does not trust the CA cannot connect.
"""

import base64
import json
import os
import sys
import time

import pyarrow.flight as flight
from confluent_kafka import Producer

URL = os.environ["FLIGHT_URL"]
CA = open(os.environ["CA_FILE"], "rb").read()
USER = os.environ["USER_NAME"]
TOKEN = os.environ["TOKEN"]
TENANT = os.environ["TENANT"]
OTHER = os.environ["OTHER_TENANT"]
BROKERS = os.environ["BROKERS"]


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def ticket(obj):
    return flight.Ticket(json.dumps(obj).encode())


client = flight.connect(URL, tls_root_certs=CA)

# 1. Basic handshake -> bearer token.
header = client.authenticate_basic_token(USER, TOKEN)
check(header[0] == b"authorization" and header[1].startswith(b"Bearer "), header)
options = flight.FlightCallOptions(headers=[header])
print("handshake gave a bearer token")

# 2. DoGet with the bearer token: only TENANT's rows.
table = client.do_get(ticket({"collection": "invoice_matches"}), options).read_all()
tenants = set(table.column("tenant_id").to_pylist())
check(tenants == {TENANT}, f"rows of {tenants}")
check(b"trimatch.as_of" in table.schema.metadata, table.schema.metadata)
rows = table.num_rows
print(f"{rows} invoice_matches rows, all of {TENANT}")

# 3. Basic credentials without padding, on a plain call.
raw = base64.b64encode(f"{USER}:{TOKEN}".encode()).rstrip(b"=")
unpadded = flight.FlightCallOptions(headers=[(b"authorization", b"Basic " + raw)])
again = client.do_get(flight.Ticket(b"invoice_matches"), unpadded).read_all()
check(again.num_rows == rows, f"{again.num_rows} != {rows}")
print("Basic credentials without padding accepted")

# 4. A subscription: the snapshot, then a change produced to Kafka.
reader = client.do_get(ticket({"subscribe": "invoice_matches", "snapshot": True}), options)
snapshot_rows = 0
while True:
    chunk = reader.read_chunk()
    if chunk.data.num_rows == 0:
        break
    check(set(chunk.data.column("tenant_id").to_pylist()) == {TENANT}, "snapshot rows of another tenant")
    snapshot_rows += chunk.data.num_rows
check(snapshot_rows == rows, f"subscription snapshot {snapshot_rows} != {rows}")
producer = Producer({"bootstrap.servers": BROKERS})
for tenant, invoice in [(OTHER, "INV-SEC-OTHER"), (TENANT, "INV-SEC-1")]:
    document = {"tenant_id": tenant, "invoice_id": invoice, "vendor_id": "V-SEC", "invoice_number": invoice,
                "po_number": "PO-SEC", "currency": "EUR", "invoice_date": "2026-11-30",
                "lines": [{"po_line_no": 1, "quantity": "1", "unit_price": "10.00"}]}
    key = {"tenant_id": tenant, "invoice_id": invoice}
    producer.produce("invoices", key=json.dumps(key), value=json.dumps(document))
producer.flush(10)
deadline = time.time() + 60
seen = None
while time.time() < deadline and seen is None:
    chunk = reader.read_chunk()
    if chunk.data.num_rows:
        ids = chunk.data.column("invoice_id").to_pylist()
        check(set(chunk.data.column("tenant_id").to_pylist()) == {TENANT}, "a change of another tenant")
        if "INV-SEC-1" in ids:
            seen = ids
check(seen is not None, "the produced invoice never arrived")
print("subscription delivered the tenant's change and nothing else")

# 5. Refusals.
try:
    client.do_get(ticket({"collection": "invoice_matches", "filter": {"tenant_id": OTHER}}), options).read_all()
    raise AssertionError("another tenant's rows were served")
except flight.FlightUnauthorizedError as error:
    check("may read the tenants" in str(error), str(error))
try:
    client.authenticate_basic_token(USER, TOKEN + "x")
    raise AssertionError("a wrong password was accepted")
except flight.FlightUnauthenticatedError as error:
    check("wrong token" in str(error), str(error))
try:
    client.do_get(flight.Ticket(b"invoice_matches")).read_all()
    raise AssertionError("a call without credentials was served")
except flight.FlightUnauthenticatedError:
    pass
print("another tenant, a wrong password and no credentials are refused")

# 6. A client that does not trust the CA.
untrusting = flight.connect(URL)
try:
    untrusting.authenticate_basic_token(USER, TOKEN)
    raise AssertionError("connected without trusting the CA")
except flight.FlightError:
    pass
print("a client without the CA cannot connect")
print("OK")
