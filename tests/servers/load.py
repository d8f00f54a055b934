#!/usr/bin/env python3
"""Benign traffic for observer's tests: keep-alive clients from several source addresses.

Usage: load.py PORT REQUESTS SOURCE_IP[,SOURCE_IP...]

Each source sends REQUESTS / len(sources) requests on one keep-alive connection: health checks,
authenticated reads, correct logins and about 15 % requests for paths that do not exist. Prints
the number of responses per status as JSON.
"""
import base64
import http.client
import json
import sys

GOOD = "Basic " + base64.b64encode(b"alice:wonderland").decode()


def main():
    port, total, sources = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
    statuses = {}
    per_source = total // len(sources)
    for ip in sources:
        conn = http.client.HTTPConnection("127.0.0.1", port, source_address=(ip, 0))
        for i in range(per_source):
            kind = i % 20
            if kind < 3:
                conn.request("GET", f"/missing/{i}")
            elif kind < 8:
                conn.request("GET", "/api/items", headers={"Authorization": GOOD})
            elif kind == 8:
                body = json.dumps({"user": "alice", "password": "wonderland"})
                conn.request("POST", "/login", body=body, headers={"Content-Type": "application/json"})
            else:
                conn.request("GET", f"/health?n={i}")
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
        conn.close()
    print(json.dumps(statuses))


if __name__ == "__main__":
    main()
