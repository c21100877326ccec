#!/usr/bin/env python3
"""An independent webhook receiver for sipdesk's tests.

It verifies every request with the Standard Webhooks reference library (`standardwebhooks`,
from PyPI) and checks every payload against sipdesk's JSON Schema (`jsonschema`, from PyPI),
so neither the signing nor the payload is judged by sipdesk's own code.

Usage: standard_webhooks.py SECRET SCHEMA LOG PORT_FILE [ANSWERS]
       standard_webhooks.py --validate SCHEMA FILE...

Every request is appended to LOG as one JSON line: the webhook headers, whether the signature
verified, the schema error if any, the status answered and the body. Answers: 401 for a
signature that does not verify, 400 for a payload the schema refuses; valid requests get, in
turn, the answers listed in ANSWERS (comma-separated: a status such as 503 or 410, "503r5" for
503 with Retry-After: 5, "200t" for 200 with a text body), then 204 with no body. The port
chosen is written to PORT_FILE once listening. With --validate, each FILE is checked against
the schema and the exit status says whether all passed.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
from standardwebhooks import Webhook

def load_validator(schema_path):
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    checker = jsonschema.FormatChecker()
    # Without its optional checker, jsonschema skips "date-time" silently: refuse to run so.
    assert "date-time" in checker.checkers, "rfc3339-validator is missing"
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


if sys.argv[1] == "--validate":
    validator = load_validator(sys.argv[2])
    for path in sys.argv[3:]:
        with open(path, encoding="utf-8") as f:
            validator.validate(json.load(f))
    sys.exit(0)

secret, schema_path, log_path, port_file = sys.argv[1:5]
answers = [a for a in (sys.argv[5] if len(sys.argv) > 5 else "").split(",") if a]
webhook = Webhook(secret)
validator = load_validator(schema_path)
lock = threading.Lock()


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
        retry_after = None
        with lock:
            if not entry["verified"]:
                answer = "401"
            elif entry["schema_error"]:
                answer = "400"
            else:
                answer = answers.pop(0) if answers else "204"
            status = int(answer[:3])
            if answer[3:].startswith("r"):
                retry_after = answer[4:]
            entry["status"] = status
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
        self.send_response(status)
        if retry_after:
            self.send_header("retry-after", retry_after)
        if status == 204:
            self.end_headers()
        else:
            text = b"ok" if status < 300 else b"refused"
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
