#!/usr/bin/env python3
"""A webhook receiver for tests/webhooks.rs: a real HTTP server that checks every delivery
with the Standard Webhooks reference library (PyPI `standardwebhooks`) and records what it
got, one JSON line per request, in LOG.

Usage: webhook_receiver.py PORT SECRET LOG MODE_FILE [JWKS_URL]

MODE_FILE is read on every request (the test rewrites it to change the behaviour):
  ok    answer 204 when the signature verifies, 400 when it does not
  500   answer 500 (after recording)
  slow  sleep 3 s, then answer 204 (the daemon's timeout is shorter: a failed attempt)

With JWKS_URL, the `data.assertion` of a `challenge.confirmed` body is checked with PyJWT
against that JWKS (`assertion_ok`), and again after one byte of its payload is changed
(`tampered_refused`: PyJWT must refuse it).
"""
import base64
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT, SECRET, LOG, MODE_FILE = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
JWKS_URL = sys.argv[5] if len(sys.argv) > 5 else None
HOOK = Webhook(SECRET)
LOCK = threading.Lock()


def mode():
    try:
        with open(MODE_FILE) as f:
            return f.read().strip() or "ok"
    except OSError:
        return "ok"


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_encode(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def check_assertion(token):
    """(assertion_ok, tampered_refused, claims or error)."""
    client = jwt.PyJWKClient(JWKS_URL)
    key = client.get_signing_key_from_jwt(token)
    opts = {"verify_aud": False, "require": []}
    try:
        claims = jwt.decode(token, key.key, algorithms=["RS256", "EdDSA"], options=opts)
        ok = True
    except jwt.PyJWTError as e:
        return False, None, str(e)
    header, payload, sig = token.split(".")
    raw = bytearray(b64url_decode(payload))
    raw[raw.index(b"@")] = ord("A")  # one byte of the address changes
    forged = ".".join([header, b64url_encode(bytes(raw)), sig])
    try:
        jwt.decode(forged, key.key, algorithms=["RS256", "EdDSA"], options=opts)
        refused = False
    except jwt.PyJWTError:
        refused = True
    return ok, refused, claims


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        m = mode()
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {
            "at": time.time(),
            "mode": m,
            "path": self.path,
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
        }
        try:
            record["payload"] = HOOK.verify(body, headers)
            record["verified"] = True
        except WebhookVerificationError as e:
            record["verified"] = False
            record["error"] = str(e)
            try:
                record["payload"] = json.loads(body)
            except ValueError:
                record["payload"] = None
        payload = record.get("payload") or {}
        assertion = (payload.get("data") or {}).get("assertion")
        if JWKS_URL and assertion:
            try:
                ok, refused, claims = check_assertion(assertion)
            except Exception as e:  # the JWKS fetch failing is a failed check too
                ok, refused, claims = False, None, repr(e)
            record["assertion_ok"], record["tampered_refused"] = ok, refused
            record["assertion_claims"] = claims
        with LOCK:
            with open(LOG, "a") as f:
                f.write(json.dumps(record) + "\n")
        if m == "slow":
            time.sleep(3)
            status = 204
        elif m == "500":
            status = 500
        else:
            status = 204 if record["verified"] else 400
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
