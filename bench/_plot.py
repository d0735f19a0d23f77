"""The PNG of a bench.e2e run: latency percentiles against the offered rate, CPU per referral per process group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt

GROUP_COLOURS = {
    "intake": "#1f77b4",
    "consent": "#ff7f0e",
    "notifications": "#2ca02c",
    "audit": "#d62728",
    "postgres": "#9467bd",
    "kafka": "#8c564b",
    "keycloak": "#7f7f7f",
}


def plot(result: dict[str, Any], path: Path) -> Path:
    steps = result["steps"]
    lotse = [s for s in steps if s["target"] == "lotse"]
    floor = [s for s in steps if s["target"] == "floor"]
    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(15, 5.5))
    m = result["machine"]
    fig.suptitle(
        f"Lotse referrals end to end vs the floor — {result['started'][:16]} UTC, {m['cores']} cores, {m['cpu_model']}", fontsize=10
    )

    def series(rows: list[dict[str, Any]], key: str, p: str) -> tuple[list[float], list[float]]:
        pts = [(r["offered_per_s"], r[key][p]) for r in rows if key in r and r[key][p] is not None]
        return [x for x, _ in pts], [y for _, y in pts]

    for key, label, colour in (
        ("http_ms", "HTTP", "#1f77b4"),
        ("inbox_ms", "→ partner inbox", "#d62728"),
        ("audit_ms", "→ audit entry", "#2ca02c"),
    ):
        for p, style in (("p50", ":"), ("p99", "-")):
            xs, ys = series(lotse, key, p)
            if xs:
                lat.plot(xs, ys, style, marker="o", color=colour, label=f"Lotse {label} {p}")
    for key, label, colour in (("http_ms", "HTTP", "#1f77b4"), ("inbox_ms", "→ partner topic", "#d62728")):
        xs, ys = series(floor, key, "p99")
        if xs:
            lat.plot(xs, ys, "--", marker="x", color=colour, alpha=0.6, label=f"floor {label} p99")
    goal = result["goal"]
    lat.axhline(goal["http_p99_ms"], color="#1f77b4", linewidth=0.8, alpha=0.4)
    lat.axhline(goal["inbox_p99_ms"], color="#d62728", linewidth=0.8, alpha=0.4)
    lat.text(lat.get_xlim()[0], goal["inbox_p99_ms"], " goal: inbox p99 < 250 ms", fontsize=7, va="bottom", color="#d62728")
    lat.text(lat.get_xlim()[0], goal["http_p99_ms"], " goal: HTTP p99 < 100 ms", fontsize=7, va="bottom", color="#1f77b4")
    lat.set_yscale("log")
    lat.set_xlabel("offered referrals/s")
    lat.set_ylabel("latency from the request's due time (ms)")
    lat.set_title("latency percentiles", fontsize=10)
    lat.grid(True, which="both", alpha=0.3)
    lat.legend(fontsize=7, loc="upper left")

    rates = [s["offered_per_s"] for s in lotse] or [s["offered_per_s"] for s in floor]
    x = list(range(len(rates)))
    bottom = [0.0] * len(rates)
    if lotse:
        for g, colour in GROUP_COLOURS.items():
            key = "postgres_cpu_ms_per_referral_this_side"
            vals = [(s[key] if g == "postgres" else s["cpu_ms_per_referral"].get(g)) or 0.0 for s in lotse]
            cpu.bar(x, vals, bottom=bottom, color=colour, label=g, width=0.6)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    by_rate = {s["offered_per_s"]: s for s in floor}
    fy = [(i, by_rate[r]["system_cpu_ms_per_referral"]) for i, r in enumerate(rates) if r in by_rate]
    if fy:
        cpu.plot([i for i, _ in fy], [v for _, v in fy], "k_", markersize=30, markeredgewidth=2.5, label="floor (system)")
    for i, s in enumerate(lotse):
        f = by_rate.get(s["offered_per_s"])
        if f and f["system_cpu_ms_per_referral"] and s["system_cpu_ms_per_referral"] is not None:
            cpu.text(
                i,
                bottom[i],
                f"{s['system_cpu_ms_per_referral'] / f['system_cpu_ms_per_referral']:.1f}x",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    cpu.set_xticks(x, [f"{r:g}" for r in rates])
    cpu.set_xlabel("offered referrals/s")
    cpu.set_ylabel("CPU ms per referral (net of idle)")
    cpu.set_title("CPU per referral by process group (label: ratio to the floor)", fontsize=10)
    cpu.grid(True, axis="y", alpha=0.3)
    cpu.set_ylim(0, max([*bottom, *(v for _, v in fy), 1.0]) * 1.15)
    cpu.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
