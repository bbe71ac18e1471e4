#!/usr/bin/env python3
"""Soak load for `rulehost serve` (stdlib only): steady single-transaction
requests from a few threads, a reload request every second, and a hostile
module swapped into the rule-set folder and out again every 10 seconds.
Writes a JSON report: answers by status and code, acknowledged decisions,
RSS samples, reload outcomes, and whether every acknowledged decision reads
back unchanged from the ledger at the end.

  load.py ADDR RULES_DIR HOSTILE_WASM ACCOUNT_IDS_FILE PID SECONDS TOKEN
"""
import http.client
import json
import os
import random
import shutil
import sys
import threading
import time

addr, rules, hostile, ids_file, pid, seconds, token = sys.argv[1:8]
host, port = addr.removeprefix("http://").rsplit(":", 1)
seconds = float(seconds)
ids = [l.strip() for l in open(ids_file) if l.strip()]
victim = os.path.join(rules, "modules", "merchant-category.wasm")
manifest = os.path.join(rules, "manifest.toml")
original = victim + ".orig"
shutil.copyfile(victim, original)

lock = threading.Lock()
answers = {}          # "status code" -> count
acknowledged = {}     # id -> outcome
unexpected = []       # error answers that are not expected refusals
reloads = {}          # result -> count
rss = []              # (seconds, kB)
stop = time.time() + seconds


def count(key):
    with lock:
        answers[key] = answers.get(key, 0) + 1


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def traffic(worker):
    rng = random.Random(worker)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    n = 0
    while time.time() < stop:
        n += 1
        src, dst = rng.sample(ids, 2)
        tx = {
            "id": f"soak-{worker}-{n}",
            "timestamp": "2026-03-01T12:00:00Z",
            "kind": "payment",
            "source": src,
            "destination": dst,
            "amount": f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}",
            "currency": "USD",
            "merchant_category": rng.choice(["5411", "7995", "5999"]),
        }
        try:
            status, body = request(conn, "POST", "/v1/transactions", json.dumps(tx), {"content-type": "application/json"})
        except Exception as e:  # a dropped connection is an error answer
            with lock:
                unexpected.append(f"{tx['id']}: {e!r}")
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            continue
        doc = json.loads(body)
        if status == 200:
            count("200")
            with lock:
                acknowledged[tx["id"]] = doc["outcome"]
        else:
            code = doc.get("error", {}).get("code", "?")
            count(f"{status} {code}")
            with lock:
                unexpected.append(f"{tx['id']}: {status} {code}")


def reloader():
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    auth = {"authorization": f"Bearer {token}"}
    swapped, last_swap = False, time.time()
    while time.time() < stop:
        if time.time() - last_swap >= 10:
            shutil.copyfile(original if swapped else hostile, victim + ".part")
            os.replace(victim + ".part", victim)
            swapped, last_swap = not swapped, time.time()
        elif not swapped and int(time.time()) % 3 == 0:
            # A real change every few seconds: a new version goes live.
            with open(manifest, "a") as f:
                f.write(f"# soak {time.time()}\n")
        status, body = request(conn, "POST", "/v1/ruleset/reload", b"", auth)
        doc = json.loads(body)
        key = doc.get("result") or doc.get("error", {}).get("code", str(status))
        with lock:
            reloads[key] = reloads.get(key, 0) + 1
        if status not in (200, 422):
            with lock:
                unexpected.append(f"reload: {status} {body[:200]!r}")
        time.sleep(1)
    shutil.copyfile(original, victim)


def sampler():
    start = time.time()
    while time.time() < stop:
        with open(f"/proc/{pid}/status") as f:
            kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        rss.append((round(time.time() - start), kb))
        time.sleep(5)


threads = [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
threads += [threading.Thread(target=reloader), threading.Thread(target=sampler)]
for t in threads:
    t.start()
for t in threads:
    t.join()

conn = http.client.HTTPConnection(host, int(port), timeout=30)
missing = []
for tx_id, outcome in acknowledged.items():
    status, body = request(conn, "GET", f"/v1/transactions/{tx_id}")
    if status != 200 or json.loads(body)["outcome"] != outcome:
        missing.append(tx_id)
status, body = request(conn, "GET", "/v1/ruleset")
ruleset_ok = status == 200 and "version" in json.loads(body)
first = [kb for s, kb in rss if 60 <= s < 120] or [rss[0][1]]
last = [kb for s, kb in rss[-12:]]
print(json.dumps({
    "seconds": seconds,
    "answers": answers,
    "acknowledged": len(acknowledged),
    "requests_per_second": round(sum(answers.values()) / seconds),
    "unexpected": unexpected[:20],
    "unexpected_count": len(unexpected),
    "reloads": reloads,
    "rss_kb_second_minute_median": sorted(first)[len(first) // 2],
    "rss_kb_last_minute_median": sorted(last)[len(last) // 2],
    "rss_kb_max": max(kb for _, kb in rss),
    "missing_from_ledger": len(missing),
    "ruleset_status_answers": ruleset_ok,
}, indent=2))
sys.exit(0 if not unexpected and not missing and ruleset_ok else 1)
