#!/usr/bin/env python3
"""Send one mail over SMTP and report the last reply (tests that run the client inside a
network namespace, with `ip netns exec`, use this: a Rust client cannot enter one without
unsafe code).

usage: smtp_send.py HOST PORT HELO MAIL_FROM RCPT MESSAGE_FILE SOURCE_IP
stdout: {"code": int, "text": str, "local_port": int}
"""
import json
import smtplib
import sys

host, port, helo, mail_from, rcpt, path, source = sys.argv[1:8]
with open(path, "rb") as f:
    message = f.read()
s = smtplib.SMTP(host, int(port), local_hostname=helo, timeout=30, source_address=(source, 0))
local_port = s.sock.getsockname()[1]
code, text = s.ehlo(helo)
if code == 250:
    code, text = s.mail(mail_from)
if code == 250:
    code, text = s.rcpt(rcpt)
if code == 250:
    try:
        code, text = s.data(message)
    except smtplib.SMTPDataError as e:
        code, text = e.smtp_code, e.smtp_error
try:
    s.quit()
except smtplib.SMTPException:
    pass
print(json.dumps({"code": code, "text": text.decode("utf-8", "replace"), "local_port": local_port}))
