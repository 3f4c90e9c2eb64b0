#!/usr/bin/env python3
"""How Python's email package reads From header values (the differential test of
src/address.rs runs this once over a batch).

stdin: one JSON string per line, a From value (what follows "From:").
stdout: one JSON object per line: {"addresses": [[display_name, addr_spec], ...],
"defects": [defect class names]} or {"error": "<exception class>"}.

The message is parsed with email.policy.strict, the header through email.headerregistry.
"""
import email
import email.policy
import json
import sys


def read(value):
    raw = ("From:" + value + "\r\n\r\n").encode("ascii", "surrogateescape")
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.strict)
        header = msg["From"]
        return {
            "addresses": [[a.display_name, a.addr_spec] for a in header.addresses],
            "defects": [type(d).__name__ for d in header.defects]
            + [type(d).__name__ for d in msg.defects],
        }
    except Exception as e:  # any failure is a disagreement, reported by its class
        return {"error": type(e).__name__}


for line in sys.stdin:
    print(json.dumps(read(json.loads(line))), flush=True)
