#!/usr/bin/env python3
"""An independent webhook receiver for sipdesk's tests.

It verifies every request with the Standard Webhooks reference library (`standardwebhooks`,
from PyPI) and checks every payload against sipdesk's JSON Schema (`jsonschema`, from PyPI),
so neither the signing nor the payload is judged by sipdesk's own code.

Usage: standard_webhooks.py SECRET SCHEMA LOG PORT_FILE [FAIL_FIRST]

Every request is appended to LOG as one JSON line: the webhook headers, whether the signature
verified, the schema error if any, the status answered and the body. The first FAIL_FIRST
valid requests are answered 503, so the sender's retries are seen. Answers: 401 for a
signature that does not verify, 400 for a payload the schema refuses, 503 while failing, 204
(no body) otherwise. The port chosen is written to PORT_FILE once listening.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
from standardwebhooks import Webhook

secret, schema_path, log_path, port_file = sys.argv[1:5]
fail_first = int(sys.argv[5]) if len(sys.argv) > 5 else 0
webhook = Webhook(secret)
with open(schema_path, encoding="utf-8") as f:
    schema = json.load(f)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
lock = threading.Lock()
state = {"valid": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry = {
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "content_type": headers.get("content-type"),
            "body": body.decode("utf-8", "replace"),
            "verified": False,
            "schema_error": None,
        }
        try:
            webhook.verify(body, headers)
            entry["verified"] = True
        except Exception as e:  # any failure to verify is a refusal
            entry["verify_error"] = str(e)
        if entry["verified"]:
            try:
                validator.validate(json.loads(body))
            except Exception as e:
                entry["schema_error"] = str(e).splitlines()[0]
        with lock:
            if not entry["verified"]:
                status = 401
            elif entry["schema_error"]:
                status = 400
            else:
                state["valid"] += 1
                status = 503 if state["valid"] <= fail_first else 204
            entry["status"] = status
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
        self.send_response(status)
        if status == 204:
            self.end_headers()
        else:
            text = b"refused" if status != 503 else b"try later"
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
import os

os.rename(port_file + ".tmp", port_file)
server.serve_forever()
