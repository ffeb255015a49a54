"""Plot a soak's samples (tests/bench/soak.sh): one panel per measure, by minute."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 — after the backend is chosen

rows = [r for r in csv.DictReader(open(sys.argv[1])) if all(v != "" for v in r.values())]
minutes = [int(r["minute"]) for r in rows]
panels = [
    ("RSS (MiB)", [int(r["rss_kib"]) / 1024 for r in rows]),
    ("open fds", [int(r["fds"]) for r in rows]),
    ("threads", [int(r["threads"]) for r in rows]),
    ("live calls", [int(r["live_calls"]) for r in rows]),
    ("SQLite file (MiB)", [int(r["db_bytes"]) / 2**20 for r in rows]),
    ("SQLite WAL (MiB)", [int(r["wal_bytes"]) / 2**20 for r in rows]),
    ("failed calls (total)", [int(r["calls_failed"] or 0) for r in rows]),
    ("retransmissions (total)", [int(r["retransmissions"] or 0) for r in rows]),
]
figure, axes = plt.subplots(4, 2, figsize=(11, 11), sharex=True)
for axis, (title, values) in zip(axes.flat, panels):
    axis.plot(minutes, values, marker=".")
    axis.set_title(title)
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
for axis in axes[-1]:
    axis.set_xlabel("minute")
figure.suptitle("wasmpbx soak: SIPp calls through `listen` plus flipping calls with RTP")
figure.tight_layout()
figure.savefig(sys.argv[2], dpi=90)
