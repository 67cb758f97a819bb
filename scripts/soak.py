"""The soak run of `scripts/bench soak`: mixed readers against a running
`trimatch serve` while it ingests, for --duration seconds.

The readers are clients nobody here wrote (pyarrow.flight, ADBC Flight SQL):
* snapshot readers: DoGet of one tenant's rows of four collections, a
  round a second (a dashboard's reads; whole-collection reads of a
  million rows every second saturate a 2-core machine by themselves);
* subscribers that read for 20 s, stall (read nothing) for 60 s and resume,
  and subscribe again when the server has cut them off (SPEC §5);
* one subscriber that never reads at all;
* a SQL client: a group-by and a join, and now and then a statement the
  server must refuse (a function readers may not call).

Every --interval seconds it samples the server: its RSS (/proc), the rows of
every collection and the input lag (/metrics), and the mean freshness over
the interval (the trimatch_freshness_seconds histogram). It prints one line
per sample and a verdict, and writes them as JSON to --report:
* the server is alive at the end, and its log has no panic;
* over the second half of the run (past the 10 minutes of history reads
  may go back to), RSS grows at most --max-growth (25 %) more than the
  rows do: it follows the state, not the readers;
* the mean freshness of every sample is below --max-freshness seconds.
Exit status 1 if any of it fails.
"""

import argparse
import json
import os
import re
import sys
import threading
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as flight

parser = argparse.ArgumentParser()
parser.add_argument("--flight", required=True)
parser.add_argument("--metrics", required=True)
parser.add_argument("--pid", type=int, required=True)
parser.add_argument("--log", required=True)
parser.add_argument("--duration", type=float, default=1800)
parser.add_argument("--interval", type=float, default=60)
parser.add_argument("--max-freshness", type=float, default=5.0)
parser.add_argument("--max-growth", type=float, default=0.25)
parser.add_argument("--report", required=True)
args = parser.parse_args()

stop = threading.Event()
counts = {}
counts_lock = threading.Lock()


def count(what, n=1):
    with counts_lock:
        counts[what] = counts.get(what, 0) + n


def ticket(obj):
    return flight.Ticket(json.dumps(obj).encode() if isinstance(obj, dict) else obj.encode())


def snapshot_reader(tenant):
    client = flight.connect(f"grpc://{args.flight}")
    while not stop.is_set():
        for name in ["invoice_matches", "match_exceptions", "exception_summary", "po_suggestions"]:
            try:
                query = {"collection": name, "filter": {"tenant_id": tenant}}
                table = client.do_get(ticket(query)).read_all()
                count("snapshots")
                count("snapshot rows", table.num_rows)
            except flight.FlightError as error:
                count(f"snapshot error: {type(error).__name__}")
            if stop.is_set():
                return
        stop.wait(1)


def stalling_subscriber():
    client = flight.connect(f"grpc://{args.flight}")
    while not stop.is_set():
        reader = client.do_get(ticket({"subscribe": "invoice_matches"}))
        count("subscriptions")
        try:
            phase_end = time.time() + 20
            while not stop.is_set():
                if time.time() >= phase_end:
                    count("stalls")
                    stop.wait(60)
                    phase_end = time.time() + 20
                reader.read_chunk()
                count("subscription messages")
        except flight.FlightError as error:
            count("subscribers cut off" if "behind" in str(error) or "cut off" in str(error)
                  else f"subscription error: {type(error).__name__}")
        except StopIteration:
            count("subscriptions ended")


def idle_subscriber():
    client = flight.connect(f"grpc://{args.flight}")
    reader = client.do_get(ticket({"subscribe": "match_exceptions"}))
    count("idle subscriptions")
    stop.wait()
    del reader


def sql_client():
    statements = [
        "SELECT tenant_id, status, count(*) AS n FROM invoice_matches GROUP BY tenant_id, status",
        "SELECT m.tenant_id, count(*) AS n FROM invoice_matches m JOIN match_exceptions e "
        "ON m.tenant_id = e.tenant_id AND m.invoice_id = e.invoice_id GROUP BY m.tenant_id",
    ]
    connection = flight_sql.connect(f"grpc://{args.flight}")
    turn = 0
    while not stop.is_set():
        turn += 1
        cursor = connection.cursor()
        try:
            if turn % 10 == 0:
                try:
                    cursor.execute("SELECT repeat('x', 3)")
                    cursor.fetchall()
                    count("sql refusals missing")
                except Exception:
                    count("sql refused")
            else:
                cursor.execute(statements[turn % 2])
                cursor.fetchall()
                count("sql statements")
        except Exception as error:
            count(f"sql error: {type(error).__name__}")
        finally:
            cursor.close()
        stop.wait(0.5)


def rss_mib():
    with open(f"/proc/{args.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def scrape():
    """The figures /metrics gives, or None when it does not answer in 30 s
    (counted: a scrape that times out is a finding of the soak)."""
    try:
        text = urllib.request.urlopen(f"http://{args.metrics}/metrics", timeout=30).read().decode()
    except OSError:
        count("metrics scrapes timed out")
        return None
    def total(name):
        return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))
    return {
        "rows": total("trimatch_rows"),
        "lag": total("trimatch_partition_lag"),
        "freshness_sum": total("trimatch_freshness_seconds_sum"),
        "freshness_count": total("trimatch_freshness_seconds_count"),
    }


threads = [threading.Thread(target=snapshot_reader, args=(tenant,), daemon=True)
           for tenant in ["tenant-000", "tenant-001"]]
threads += [threading.Thread(target=f, daemon=True) for f in
            [stalling_subscriber, stalling_subscriber, idle_subscriber, sql_client]]
for thread in threads:
    thread.start()

samples = []
started = time.time()
previous = None
while previous is None:
    previous = scrape()
print(f"{'minute':>7} {'RSS MiB':>9} {'rows':>10} {'lag':>8} {'freshness s':>12}", flush=True)
while time.time() - started < args.duration:
    time.sleep(min(args.interval, max(0.0, args.duration - (time.time() - started))))
    now = scrape()
    if now is None:
        continue
    served = now["freshness_count"] - previous["freshness_count"]
    freshness = (now["freshness_sum"] - previous["freshness_sum"]) / served if served else None
    sample = {"seconds": round(time.time() - started), "rss_mib": rss_mib(), "rows": now["rows"],
              "lag": now["lag"], "freshness_mean_s": freshness}
    samples.append(sample)
    previous = now
    print(f"{sample['seconds'] / 60:7.1f} {sample['rss_mib']:9.0f} {sample['rows']:10.0f} "
          f"{sample['lag']:8.0f} {freshness if freshness is not None else float('nan'):12.3f}", flush=True)
stop.set()

alive = os.path.exists(f"/proc/{args.pid}")
with open(args.log, errors="replace") as log:
    panics = sum("panicked" in line for line in log)
failures = []
if len(samples) < 2:
    failures.append("fewer than two samples")
    samples = samples * 2 or [{"seconds": 0, "rss_mib": 1, "rows": 0, "lag": 0, "freshness_mean_s": None}] * 2
half = samples[len(samples) // 2:]
grown_rows = half[-1]["rows"] - half[0]["rows"]
growth = half[-1]["rss_mib"] / half[0]["rss_mib"] - 1
rows_growth = half[-1]["rows"] / max(half[0]["rows"], 1) - 1
worst_freshness = max((s["freshness_mean_s"] or 0) for s in samples)
if not alive:
    failures.append("the server is not running")
if panics:
    failures.append(f"{panics} panics in the server's log")
if (1 + growth) > (1 + max(rows_growth, 0)) * (1 + args.max_growth):
    failures.append(f"RSS grew {growth:.0%} over the second half while the rows grew {rows_growth:.0%}")
if worst_freshness > args.max_freshness:
    failures.append(f"mean freshness reached {worst_freshness:.2f} s")
if counts.get("metrics scrapes timed out"):
    failures.append(f"{counts['metrics scrapes timed out']} /metrics scrapes took over 30 s")
if counts.get("sql refusals missing"):
    failures.append("a refused function ran")
report = {"samples": samples, "readers": counts, "panics": panics, "alive": alive,
          "rss_growth_second_half": growth, "rows_added_second_half": grown_rows,
          "worst_mean_freshness_s": worst_freshness, "failures": failures}
with open(args.report, "w") as out:
    json.dump(report, out, indent=1)
print("readers:", json.dumps(counts, sort_keys=True))
print(f"second half: RSS {growth:+.1%} while rows grew {rows_growth:+.1%} ({grown_rows:,.0f}); "
      f"worst mean freshness {worst_freshness:.3f} s; panics {panics}; server alive: {alive}")
print("soak: " + ("FAILED: " + "; ".join(failures) if failures else "OK"))
sys.exit(1 if failures else 0)
