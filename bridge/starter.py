"""``pollbridge init``: a commented starter configuration that passes ``pollbridge check``."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.core.signing import generate_secret

TEMPLATE = """\
# pollbridge configuration, written by `pollbridge init`.
#   check it:   pollbridge check --config {path}
#   try it:     pollbridge listen --secret {secret}
#               pollbridge run --config {path}
# Every key is described, with its default, in docs/configuration.md.
# Any value may use ${{VAR}}: read from the environment, or under systemd from a file in
# $CREDENTIALS_DIRECTORY (LoadCredential=); ${{VAR:-default}} gives a fallback, $$ a literal $.

[bridge]
# Snapshots, the event log and the delivery queue (SQLite). A relative path is relative to
# $STATE_DIRECTORY under systemd, else to the working directory.
state = "pollbridge.db"
# log_level = "info"         # debug | info | warning | error
# log_format = "text"        # text | json (one JSON object per line)
# http = "127.0.0.1:9464"    # serve /metrics (Prometheus) and /healthz; off when unset
# retention = "14d"          # prune events and finished deliveries older than this; "off" keeps all
# shutdown_grace = "10s"     # how long a stop waits for in-flight polls and deliveries

# One [[sources]] table per API to poll. Put more in conf.d/*.toml beside this file.
[[sources]]
name = "orders"
url = "https://api.example.com/v1/orders"
every = "1m"                 # or: cron = "*/5 * * * *"
items = "$.data[*]"          # JSONPath to the list of items in each response
key = "$.id"                 # JSONPath to an item's unique key (a list of paths: a composite key)
# ignore = ["$.updated_at"]  # changes only under these paths are not worth an event
# headers = {{ Authorization = "Bearer ${{ORDERS_TOKEN}}" }}
# baseline = "silent"        # first poll: record a snapshot quietly; "emit" sends item.created for each

# One [[listeners]] table per webhook receiver.
[[listeners]]
name = "local"
url = "http://127.0.0.1:8787/hooks"  # where `pollbridge listen` receives
# Signs every webhook (Standard Webhooks); share it with the receiver. On a server keep it
# out of this file: secret = "${{WEBHOOK_SECRET}}" with LoadCredential= (docs/deployment.md).
secret = "{secret}"
# sources = ["orders"]       # default: every source
# events = ["created", "updated", "deleted"]
# retry = ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
"""


def starter_config(path: str | os.PathLike[str], secret: str | None = None) -> str:
    """The starter configuration's text, with a fresh signing secret."""
    return TEMPLATE.format(path=path, secret=secret or generate_secret())


def write_starter(path: Path, *, force: bool = False) -> str:
    """Write the starter configuration (mode 0600: it holds a secret); return its text."""
    text = starter_config(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return text
