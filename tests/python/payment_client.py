"""SPEC §8 through clients nobody here wrote. Run by tests/payments_e2e.rs
against `trimatch serve` (Flight on FLIGHT_ADDR) reading the broker at BROKERS,
after the rest of a generated history is on the broker:

1. produce the history's payments (PAYMENTS_FILE: one JSON object per line,
   key and value as hex, null for none) with confluent-kafka, in order;
2. wait until a snapshot's `trimatch.offsets` covers every partition of every
   input topic up to its high watermark;
3. read invoice_matches and the three payment collections with pyarrow at that
   one time, and compare each with the plain evaluation of the SPEC
   (EXPECTED_DIR/<collection>.arrow, written by the test from its oracle):
   the same rows, every column (an exception's detail, which the oracle does
   not write, must be a sentence).
"""

import json
import os
import time
from collections import Counter

import pyarrow as pa
import pyarrow.flight as flight
from confluent_kafka import Consumer, Producer, TopicPartition

FLIGHT_ADDR = os.environ["FLIGHT_ADDR"]
BROKERS = os.environ["BROKERS"]
PAYMENTS_FILE = os.environ["PAYMENTS_FILE"]
EXPECTED_DIR = os.environ["EXPECTED_DIR"]
TOPICS = ["purchase_orders", "goods_receipts", "invoices", "match_policies",
          "exception_resolutions", "payments"]
COLLECTIONS = ["invoice_matches", "payment_matches", "payment_exceptions",
               "payment_suggestions"]

client = flight.connect(f"grpc://{FLIGHT_ADDR}")


def check(condition, message):
    if not condition:
        raise AssertionError(message)


# 1. The payments, in order (one key stays on one partition, in order). ------
producer = Producer({"bootstrap.servers": BROKERS, "enable.idempotence": False,
                     "max.in.flight.requests.per.connection": 1, "linger.ms": 5})
failures = []


def delivered(error, _message):
    if error is not None:
        failures.append(error)


sent = 0
with open(PAYMENTS_FILE) as lines:
    for line in lines:
        message = json.loads(line)
        key = None if message["key"] is None else bytes.fromhex(message["key"])
        value = None if message["value"] is None else bytes.fromhex(message["value"])
        producer.produce("payments", key=key, value=value, on_delivery=delivered)
        producer.poll(0)
        sent += 1
check(producer.flush(60) == 0, "every payment is delivered")
check(not failures, f"delivery failures: {failures[:3]}")
print(f"produced {sent} payments with confluent-kafka")

# 2. Wait until the engine has consumed every partition to its end. ----------
consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": "payment-client-watermarks"})
high = {}
for topic in TOPICS:
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    for partition in partitions:
        _, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        high[f"{topic}/{partition}"] = end
consumer.close()

deadline = time.time() + 120
while True:
    reader = client.do_get(flight.Ticket(json.dumps({"collection": "payment_matches"}).encode()))
    reader.read_all()
    metadata = reader.schema.metadata
    offsets = json.loads(metadata[b"trimatch.offsets"])
    behind = {key: (offsets.get(key), end) for key, end in high.items()
              if offsets.get(key, 0) < end}
    if not behind:
        as_of = int(metadata[b"trimatch.as_of"])
        break
    check(time.time() < deadline, f"not caught up after 120 s: {behind}")
    time.sleep(0.2)
print(f"caught up at {as_of}: {sum(high.values())} messages")


# 3. Every collection at that time equals the oracle's. ----------------------
def rows(table):
    """The rows as sorted tuples of (column, value): Decimals compare by value."""
    return sorted((tuple(sorted(row.items())) for row in table.to_pylist()), key=repr)


for collection in COLLECTIONS:
    ticket = {"collection": collection, "as_of": as_of}
    actual = client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
    with pa.ipc.open_file(os.path.join(EXPECTED_DIR, f"{collection}.arrow")) as file:
        expected = file.read_all()
    check(actual.schema.remove_metadata() == expected.schema,
          f"{collection} schema:\n{actual.schema}\nexpected:\n{expected.schema}")
    if "detail" in actual.column_names:
        details = actual.column("detail").to_pylist()
        check(all(detail.endswith(".") and len(detail) > 10 for detail in details),
              f"{collection} details: {details[:3]}")
        actual = actual.drop_columns(["detail"])
        expected = expected.drop_columns(["detail"])
    got, want = rows(actual), rows(expected)
    missing = list((Counter(want) - Counter(got)).elements())
    extra = list((Counter(got) - Counter(want)).elements())
    check(not missing and not extra,
          f"{collection}: {len(missing)} rows missing, e.g. {missing[:2]}; "
          f"{len(extra)} extra, e.g. {extra[:2]}")
    check(len(got) == len(want), f"{collection}: {len(got)} rows, expected {len(want)}")
    print(f"{collection}: {len(got)} rows equal")

print("OK")
