"""A Flask API that takes its key the three ways real APIs accept one, served by gunicorn in
the fingerprint test.

  GET /v1/items   200 with a key of KEYS in X-Api-Key, as `Authorization: Bearer <key>`, or
                  in the api_key query parameter (looked at in that order); 401 otherwise

The keys come from the environment (KEYS, comma-separated), so the test alone knows them.
"""
import os

from flask import Flask, jsonify, request

app = Flask(__name__)
KEYS = set(filter(None, os.environ.get("KEYS", "").split(",")))


def presented_key():
    if request.headers.get("X-Api-Key"):
        return request.headers["X-Api-Key"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.args.get("api_key")


@app.get("/v1/items")
def items():
    if presented_key() not in KEYS:
        return jsonify(error="invalid or missing API key"), 401
    return jsonify(items=[{"id": 1}, {"id": 2}])
