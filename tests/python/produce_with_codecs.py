"""Produces messages to Kafka with confluent-kafka, a client nobody here wrote,
one compression codec at a time.

Run by tests/kafka_codecs.rs: argv[1] is the bootstrap address, argv[2] a file
of JSON lines {"topic", "key", "value", "codec"} and optionally "partition"
(key and value are text or null), in the order to produce them. Messages are produced codec by codec, each
with its own producer (compression.type = codec) and lingering so that batches
hold many messages, and flushed before the next codec starts, so the order of
every partition is the file's order.
"""

import itertools
import json
import sys

from confluent_kafka import Producer

bootstrap, path = sys.argv[1], sys.argv[2]
with open(path) as lines:
    messages = [json.loads(line) for line in lines]

for codec, group in itertools.groupby(messages, key=lambda message: message["codec"]):
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "compression.type": codec,
        "linger.ms": 20,
        "batch.num.messages": 500,
        "enable.idempotence": False,
    })
    failures = []
    count = 0
    for message in group:
        key = message["key"].encode() if message["key"] is not None else None
        value = message["value"].encode() if message["value"] is not None else None
        extra = {"partition": message["partition"]} if "partition" in message else {}
        producer.produce(message["topic"], value=value, key=key, **extra,
                         on_delivery=lambda error, _: error and failures.append(error))
        producer.poll(0)
        count += 1
    remaining = producer.flush(60)
    if remaining or failures:
        sys.exit(f"{codec}: {remaining} messages not delivered, errors: {failures[:3]}")
    print(f"{codec}: {count} messages")
