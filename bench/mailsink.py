"""The demo mail sink's CPU per e-mail: `aiosmtpd` with its Mailbox handler against `lotse_cli.mailsink`.

    .venv/bin/python -m bench.mailsink [--n 1000] [--rounds 3]

Starts both sinks, each in its own process on a free port with its own temporary maildir, and sends `--n` e-mails
of the notifications service's shape (multipart/alternative, UTF-8 text and HTML parts, ~3 kB) over one kept-open
smtplib connection per round, to one sink and then the other, alternating which goes first, `--rounds` times.
Reports each sink process's CPU per e-mail (user + system time of all its threads, from /proc/<pid>/task/*/schedstat,
read before and after each round) and the ratio aiosmtpd / lotse_cli.mailsink. The sender is this process and is
not counted. The maildirs are removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate
from pathlib import Path

from tests.peers import free_port

SINKS = ("aiosmtpd", "lotse")


def command(sink: str, port: int, maildir: Path) -> list[str]:
    if sink == "aiosmtpd":  # as deploy/local/services.sh started it before
        return [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Mailbox", str(maildir)]
    return [sys.executable, "-m", "lotse_cli.mailsink", "--host", "127.0.0.1", "--port", str(port), "--maildir", str(maildir)]


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` in nanoseconds (schedstat's first field; /proc/<pid>/stat has 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def ticks(pid: int) -> tuple[int, int]:
    """User and system time of `pid` in clock ticks (/proc/<pid>/stat), for the split between the two."""
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[11]), int(fields[12])


def messages(n: int) -> list[bytes]:
    """`n` e-mails as the notifications service builds them (compat32, `SmtpSender._build_compat32`), ~3 kB each."""
    text = (
        "Guten Tag Frau Koval,\n\nIhre Überweisung an die Caritas Paderborn (Migrationsberatung) wurde am 30.11. versandt. "
        "Die Beratungsstelle meldet sich innerhalb von fünf Werktagen bei Ihnen. Sie können Ihre Einwilligung jederzeit "
        "widerrufen: https://lotse.example/einwilligung\n\nWas passiert jetzt? Die Beratungsstelle sieht nur die Angaben, "
        "in deren Weitergabe Sie eingewilligt haben: Ihren Namen, Ihre Telefonnummer und das Thema der Beratung. Jede "
        "Weitergabe wird protokolliert; Auskunft darüber erhalten Sie bei Ihrer Fallmanagerin.\n\nMit freundlichen Grüßen\n"
        "Ihr Kommunales Integrationszentrum\n\n-- \nDiese Nachricht wurde automatisch erstellt. Bitte antworten Sie nicht "
        "auf diese E-Mail.\n"
    )
    html = "<html><body>" + "".join(f"<p>{line}</p>" for line in text.splitlines() if line) + "</body></html>"
    out = []
    for i in range(n):
        msg = MIMEMultipart("alternative")
        msg.attach(MIMEText(text, "plain", "utf-8"))
        msg.attach(MIMEText(html, "html", "utf-8"))
        msg["From"] = "noreply@lotse.example"
        msg["To"] = f"client-{i}@example.org"
        msg["Subject"] = Header("Ihre Überweisung wurde versandt", "utf-8").encode()
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = f"<bench-{i}@notifications.lotse>"
        msg["Auto-Submitted"] = "auto-generated"
        msg["Content-Language"] = "de"
        out.append(msg.as_bytes().replace(b"\n", b"\r\n"))
    return out


@contextlib.contextmanager
def running(sink: str, root: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port, maildir = free_port(), root / sink
    proc = subprocess.Popen(command(sink, port, maildir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{sink} exited with {proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{sink} did not listen on {port}")
            time.sleep(0.05)
        yield proc, port, maildir
    finally:
        proc.terminate()
        proc.wait(10)


def one_round(pid: int, port: int, batch: list[bytes]) -> tuple[float, int, int]:
    """Sends `batch` over one connection; the sink's CPU seconds for it, and its user and system ticks."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        before, (user0, sys0) = cpu_ns(pid), ticks(pid)
        for i, data in enumerate(batch):
            refused = smtp.sendmail("noreply@lotse.example", [f"client-{i}@example.org"], data)
            assert not refused, refused
        after, (user1, sys1) = cpu_ns(pid), ticks(pid)
    return (after - before) / 1e9, user1 - user0, sys1 - sys0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=1000, help="e-mails per sink and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    batch = messages(args.n)
    size = sum(map(len, batch)) / len(batch)
    cpu: dict[str, float] = dict.fromkeys(SINKS, 0.0)
    user: dict[str, int] = dict.fromkeys(SINKS, 0)
    system: dict[str, int] = dict.fromkeys(SINKS, 0)
    with tempfile.TemporaryDirectory(prefix="bench-mailsink-") as tmp, contextlib.ExitStack() as stack:
        procs = {sink: stack.enter_context(running(sink, Path(tmp))) for sink in SINKS}
        for r in range(args.rounds):
            order = SINKS if r % 2 == 0 else SINKS[::-1]
            for sink in order:
                proc, port, _ = procs[sink]
                spent, u, k = one_round(proc.pid, port, batch)
                cpu[sink] += spent
                user[sink] += u
                system[sink] += k
                print(f"round {r + 1} {sink:8}: {spent / args.n * 1e3:.3f} ms CPU per e-mail", flush=True)
        for sink in SINKS:
            filed = len(list((procs[sink][2] / "new").iterdir()))
            assert filed == args.n * args.rounds, (sink, filed)
    per = {sink: cpu[sink] / (args.n * args.rounds) * 1e3 for sink in SINKS}
    print(f"\n{args.n} e-mails x {args.rounds} rounds per sink, {size:.0f} bytes each, one SMTP connection per round")
    for sink, label in (("aiosmtpd", "aiosmtpd Mailbox   "), ("lotse", "lotse_cli.mailsink ")):
        share = user[sink] / max(1, user[sink] + system[sink])
        print(f"{label}   : {per[sink]:.3f} ms CPU per e-mail ({share:.0%} user, {1 - share:.0%} system)")
    print(f"ratio aiosmtpd / ours : {per['aiosmtpd'] / per['lotse']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
