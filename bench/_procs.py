"""CPU seconds and memory per process group, read from /proc (Linux only).

A *group* is one or more root processes and all their descendants: a service (its pid file under
`.run/services`), Kafka's JVM (`.run/kafka/kafka.pid`, a shell whose child is the JVM), PostgreSQL
(the postmaster from `postmaster.pid` and every backend it forks), Keycloak, the load generator.

CPU of a group = sum over its live processes of utime + stime + cutime + cstime. The `c*` fields
hold the CPU of children the process has already reaped, so a PostgreSQL backend that exits between
two samples is not lost: its time moves into the postmaster's cutime. Differences of two samples
are what a step used.

Memory: each process's VmRSS, with shared memory (RssShmem, PostgreSQL's shared buffers, which
every backend maps) counted once per group: sum(VmRSS - RssShmem) + max(RssShmem).

Processes are found by pid file first and, where a pid file is missing, by a command line that
names this checkout (two stacks may run on one machine, e.g. CI's in another directory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcSample:
    pid: int
    ppid: int
    cpu_s: float  # utime + stime + cutime + cstime
    own_cpu_s: float  # utime + stime
    start_ticks: int  # distinguishes a reused pid


def read_stat(pid: int) -> ProcSample | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or parentheses itself.
    fields = raw[raw.rindex(b")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ProcSample(
        pid=pid,
        ppid=int(fields[1]),
        cpu_s=(utime + stime + cutime + cstime) / CLK_TCK,
        own_cpu_s=(utime + stime) / CLK_TCK,
        start_ticks=int(fields[19]),
    )


def read_rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, RssShmem) in kB; (0, 0) for a process that is gone."""
    rss = shmem = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("RssShmem:"):
                shmem = int(line.split()[1])
    except OSError:
        pass
    return rss, shmem


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def pid_from_file(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


@dataclass
class Group:
    """A named set of root pids (their descendants belong to the group too)."""

    name: str
    roots: set[int] = field(default_factory=set)
    # Roots may be found again at every sample (a restarted service gets a new pid).
    finder: Callable[[], Iterable[int]] | None = None
    # False: the roots alone, their own CPU only (the load generator, whose children are other groups).
    tree: bool = True

    def refresh(self) -> None:
        if self.finder is not None:
            self.roots = {p for p in self.finder() if p}


def find_by_cmdline(*needles: str) -> Callable[[], list[int]]:
    """Root processes whose command line contains every needle (and whose parent does not)."""

    def find() -> list[int]:
        hits = {p for p in all_pids() if all(n in cmdline(p) for n in needles)}
        out = []
        for p in hits:
            s = read_stat(p)
            if s is not None and s.ppid not in hits:
                out.append(p)
        return out

    return find


def local_stack_groups(repo: Path, run_dir: Path, pg_port: int) -> list[Group]:
    """The processes of the local stack and services of this checkout (deploy/local)."""
    groups: list[Group] = []
    services = run_dir / "services"
    for name in ("intake", "consent", "notifications", "audit"):

        def svc(name: str = name) -> list[int]:
            pid = pid_from_file(services / f"{name}.pid")
            if pid is not None and f"services.{name}" in cmdline(pid):
                return [pid]
            return [p for p in find_by_cmdline(f"-m services.{name}")() if _cwd(p) == repo]

        groups.append(Group(name, finder=svc))

    def pidfile_or(path: Path, *needles: str) -> Callable[[], list[int]]:
        def find() -> list[int]:
            pid = pid_from_file(path)
            return [pid] if pid is not None else find_by_cmdline(*needles)()

        return find

    groups.append(Group("mailsink", finder=pidfile_or(services / "mailsink.pid", "lotse_cli.mailsink", str(run_dir / "mail"))))
    groups.append(Group("kafka", finder=pidfile_or(run_dir / "kafka" / "kafka.pid", "kafka.Kafka", str(run_dir / "kafka"))))
    pg_dir = run_dir / f"pg-{pg_port}" / "data"
    groups.append(Group("postgres", finder=pidfile_or(pg_dir / "postmaster.pid", "postgres", f"-D {pg_dir}")))
    groups.append(Group("keycloak", finder=pidfile_or(run_dir / "keycloak" / "keycloak.pid", f"-Dkc.home.dir={run_dir / 'keycloak'}")))
    return groups


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


@dataclass
class Snapshot:
    """One reading of every group: CPU seconds per group and per process (for attribution)."""

    cpu: dict[str, float]
    procs: dict[str, dict[tuple[int, int], float]]  # group -> (pid, start) -> own CPU seconds
    rss_mb: dict[str, float]
    machine_busy_s: float = 0.0  # every CPU's non-idle time (/proc/stat), whoever used it


def machine_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine since boot (user, nice, system, irq, softirq, steal)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class ProcMeter:
    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)

    def members(self) -> dict[str, list[ProcSample]]:
        """Each group's live processes (roots and descendants), from one scan of /proc."""
        stats = [s for s in (read_stat(p) for p in all_pids()) if s is not None]
        children: dict[int, list[ProcSample]] = {}
        by_pid = {s.pid: s for s in stats}
        for s in stats:
            children.setdefault(s.ppid, []).append(s)
        out: dict[str, list[ProcSample]] = {}
        for g in self.groups:
            g.refresh()
            seen: list[ProcSample] = []
            stack = [by_pid[r] for r in g.roots if r in by_pid]
            while stack:
                s = stack.pop()
                if not g.tree:
                    s = ProcSample(s.pid, s.ppid, s.own_cpu_s, s.own_cpu_s, s.start_ticks)
                seen.append(s)
                if g.tree:
                    stack.extend(children.get(s.pid, ()))
            out[g.name] = seen
        return out

    def snapshot(self, *, rss: bool = True) -> Snapshot:
        members = self.members()
        cpu = {name: sum(s.cpu_s for s in procs) for name, procs in members.items()}
        procs = {name: {(s.pid, s.start_ticks): s.own_cpu_s for s in ps} for name, ps in members.items()}
        rss_mb: dict[str, float] = {}
        if rss:
            for name, ps in members.items():
                readings = [read_rss_kb(s.pid) for s in ps]
                private = sum(r - sh for r, sh in readings)
                rss_mb[name] = (private + max((sh for _, sh in readings), default=0)) / 1024
        return Snapshot(cpu, procs, rss_mb, machine_busy_s())


def cpu_between(a: Snapshot, b: Snapshot) -> dict[str, float]:
    return {g: max(0.0, b.cpu.get(g, 0.0) - a.cpu.get(g, 0.0)) for g in b.cpu}


def per_process_between(a: Snapshot, b: Snapshot, group: str) -> dict[int, float]:
    """Own CPU seconds per pid of `group` between two snapshots (processes started since count from 0)."""
    before = a.procs.get(group, {})
    return {pid: max(0.0, cpu - before.get((pid, start), 0.0)) for (pid, start), cpu in b.procs.get(group, {}).items()}


def machine() -> dict[str, object]:
    """CPU model, cores and memory of this machine, for the results."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": os.uname().release,
    }


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
