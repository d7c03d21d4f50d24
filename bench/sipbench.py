"""Shared pieces of the SIPp benchmarks (bench/relay, bench/isolation): peers in their own
process groups, builds, siphost configs moved to free loopback ports, CPU of a process group,
SIPp's counters and response times, raw results appended under bench/results/.
"""

import datetime
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 30.0

STARTED = []  # every Popen, killed (group-wide) at exit
_PORTS_GIVEN = set()


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def spawn(args, log_path, cwd=None, env=None):
    """Starts a peer in its own process group with output into log_path."""
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
    STARTED.append(proc)
    return proc


def stop_group(proc, grace=3.0):
    """SIGTERM to the process group, SIGKILL after a grace."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Kamailio's workers may outlive the main process for a moment.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    if proc in STARTED:
        STARTED.remove(proc)


def stop_all():
    while STARTED:
        stop_group(STARTED[-1])


def exit_on_signals(deadline_seconds):
    """SIGTERM, SIGINT and the deadline end the bench through SystemExit, so peers die."""

    def on_signal(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, lambda *_: on_signal("SIGALRM (deadline)", None))
    signal.alarm(deadline_seconds)


def tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"<{path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def wait_for(predicate, what, proc, log_path, timeout=READY_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            sys.exit(f"{what}: process exited ({proc.returncode}); log {log_path}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            sys.exit(f"{what}: not ready within {timeout:.0f} s; log {log_path}:\n{tail(log_path)}")
        time.sleep(0.02)


def free_port():
    """A loopback port free for UDP and TCP at the time of asking, never handed out twice."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
        if port in _PORTS_GIVEN:
            continue
        _PORTS_GIVEN.add(port)
        return port
    sys.exit("no free loopback port")


def udp_bound(port):
    """Whether some socket has UDP port bound (read from /proc, no probing)."""
    with open("/proc/net/udp") as table:
        next(table)
        for line in table:
            local = line.split()[1]
            ip, port_hex = local.split(":")
            if ip in ("0100007F", "00000000") and int(port_hex, 16) == port:
                return True
    return False


def options_ping(port):
    """Sends one OPTIONS over UDP; True if a 200 comes back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(0.2)
        local = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{local};branch=z9hG4bK-ping-{local}\r\n"
            f"From: <sip:ping@{LOOPBACK}>;tag=ping{local}\r\n"
            f"To: <sip:{LOOPBACK}:{port}>\r\n"
            f"Call-ID: ping-{local}@{LOOPBACK}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (LOOPBACK, port))
        try:
            return sock.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def group_stats(pgid):
    """(pid, fields after "(comm)") of every live process in process group pgid."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # Fields after "(comm)": state ppid pgrp ... utime(14) stime(15).
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid:
            yield int(entry), fields


def group_cpu_seconds(pgid):
    """utime+stime of every live process in process group pgid, in seconds."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _pid, fields in group_stats(pgid))
    return ticks / CLOCK_TICKS


def thread_snapshot(pgid):
    """{thread name: [CPU ticks, voluntary switches, involuntary switches, threads]} over
    every thread of every process in group pgid (threads of one name added up)."""
    totals = {}
    for pid, _fields in group_stats(pgid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            base = f"/proc/{pid}/task/{tid}"
            try:
                with open(f"{base}/stat") as f:
                    stat = f.read()
                with open(f"{base}/status") as f:
                    status = f.read()
            except OSError:
                continue  # exited meanwhile
            name = stat[stat.find("(") + 1 : stat.rfind(")")]
            fields = stat[stat.rfind(")") + 2 :].split()
            switches = {
                key: int(value)
                for key, value in (line.split(":\t") for line in status.splitlines() if ":\t" in line)
                if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
            }
            entry = totals.setdefault(name, [0, 0, 0, 0])
            entry[0] += int(fields[11]) + int(fields[12])
            entry[1] += switches.get("voluntary_ctxt_switches", 0)
            entry[2] += switches.get("nonvoluntary_ctxt_switches", 0)
            entry[3] += 1
    return totals


def thread_changes(before, after, per):
    """What each thread name used between two `thread_snapshot`s, per `per` units of work
    (refreshes, calls): CPU ms and context switches (voluntary, involuntary). Threads
    that started or ended in between count from zero. The CPU comes from the kernel's
    tick accounting, which charges a whole tick to whatever runs when it fires: read it
    as where the CPU went, not as exact amounts for short-lived wake-ups."""
    changes = {}
    for name, (ticks, voluntary, involuntary, threads) in after.items():
        t0, v0, i0, _ = before.get(name, (0, 0, 0, 0))
        changes[name] = {
            "threads": threads,
            "cpu_ms_per": round((ticks - t0) * 1000 / CLOCK_TICKS / per, 4),
            "voluntary_per": round((voluntary - v0) / per, 3),
            "involuntary_per": round((involuntary - i0) / per, 3),
        }
    return changes


# System calls and switches a relay or a refresh costs: exact where CPU figures are noisy.
PERF_EVENTS = [
    "syscalls:sys_enter_clock_gettime",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_futex",
    "syscalls:sys_enter_write",
    "context-switches",
    "page-faults",
    "task-clock",
]


def perf_stat(pgid, seconds, events=PERF_EVENTS):
    """Starts `perf stat` on every process of group pgid (Kamailio's children too) for
    `seconds`; `.communicate()` on the result, then `perf_counts(stderr)`, gives {event: count}."""
    pids = ",".join(str(pid) for pid, _fields in group_stats(pgid))
    return subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", pids,
         "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def perf_counts(csv_text):
    """{event: count} from `perf stat -x ,` output (task-clock in ms)."""
    counts = {}
    for line in csv_text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in PERF_EVENTS:
            try:
                counts[fields[2]] = float(fields[0])
            except ValueError:
                pass  # <not counted>
    return counts


def cargo_artifacts(args, what):
    """Runs `cargo build ARGS` and returns {file name: path} of what it built."""
    log(f"building {what}: cargo build {' '.join(args)}")
    result = subprocess.run(
        ["cargo", "build", *args, "--message-format=json-render-diagnostics"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        sys.exit(f"cargo build {' '.join(args)} failed")
    built = {}
    for line in result.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact":
            continue
        for path in [message.get("executable")] + message.get("filenames", []):
            if path:
                built[Path(path).name] = Path(path)
    return built


def build_siphost():
    built = cargo_artifacts(["--release", "-p", "siphost"], "siphost (release)")
    if "siphost" not in built:
        sys.exit("cargo did not report the siphost executable")
    return built["siphost"]


def build_filters(packages):
    """Builds wasm filter crates as the README says; returns {file name: path}."""
    args = ["--profile", "wasm", "--target", "wasm32-wasip2"]
    for package in packages:
        args += ["-p", package]
    return {
        name: path
        for name, path in cargo_artifacts(args, f"filters {', '.join(packages)}").items()
        if name.endswith(".wasm")
    }


def filter_paths(config_text):
    """Every [[tenant.filter]] path of a config."""
    config = tomllib.loads(config_text)
    return [f["path"] for t in config.get("tenant", []) for f in t.get("filter", [])]


class SiphostConfig:
    """A siphost config moved onto free loopback ports for a bench run.

    Every distinct [[listen]] address (and the tenant socket names that use it) moves to
    a free 127.0.0.1 port, [admin].listen too (a config without [admin] gets one, so every
    run can read the tenants' counters); [proxy].default_route becomes the bench's
    callee; filter paths become absolute, with the ones the bench built (same file name)
    pointing at the build's output; `shards` sets [proxy].shards. Everything else, [process]
    included, stays as written.
    """

    def __init__(self, source, next_hop, built_filters, shards=None):
        self.source = Path(source)
        text = self.source.read_text()
        config = tomllib.loads(text)
        if shards is not None:
            if "shards" in config.get("proxy", {}):
                sys.exit(f"{source}: sets [proxy].shards already; drop --shards")
            text, found = re.subn(r"(?m)^\[proxy\][ \t]*$", f"[proxy]\nshards = {shards}", text, count=1)
            if not found:
                sys.exit(f"{source}: no [proxy] table to set shards in")
        listens = config.get("listen", [])
        udp = [entry["address"] for entry in listens if entry.get("transport") == "udp"]
        if not udp:
            sys.exit(f"{source}: the bench needs a udp [[listen]] socket")
        if "default_route" not in config.get("proxy", {}):
            sys.exit(f"{source}: the bench needs [proxy].default_route (it becomes the callee)")
        self.ports = {}
        for address in dict.fromkeys(entry["address"] for entry in listens):
            self.ports[address] = free_port()
            text = re.sub(
                r"(?<![\d.])" + re.escape(address) + r"(?!\d)",
                f"{LOOPBACK}:{self.ports[address]}",
                text,
            )
        # Every run reads the tenants' counters (how many hooks ran inline, time-outs): a
        # config without [admin] gets one on a free port.
        admin = config.get("admin")
        self.admin_port = free_port() if admin is None or admin.get("listen") else None
        if admin is None:
            text += f'\n[admin]\nlisten = "{LOOPBACK}:{self.admin_port}"\n'
        elif self.admin_port is not None:
            text = text.replace(f'"{admin["listen"]}"', f'"{LOOPBACK}:{self.admin_port}"')
        route = config["proxy"]["default_route"]
        text = text.replace(f'"{route}"', json.dumps(next_hop))
        for path in dict.fromkeys(filter_paths(text)):
            resolved = built_filters.get(Path(path).name) or ROOT / path
            if not resolved.exists():
                sys.exit(f"{source}: filter {path} does not exist")
            text = text.replace(json.dumps(path), json.dumps(str(resolved)))
        self.text = text
        self.entry_port = self.ports[udp[0]]

    def port_of(self, address):
        """The bench port that replaced `address` of the original config."""
        return self.ports[address]


def tenant_counters(siphost_bin, admin_port):
    """{tenant: counters} from filter.list over siphost's admin endpoint."""
    result = subprocess.run(
        [str(siphost_bin), "rpc", "--json", "--admin", f"{LOOPBACK}:{admin_port}", "filter.list"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10,
    )
    if result.returncode != 0:
        sys.exit(f"siphost rpc filter.list failed: {result.stderr}")
    status = json.loads(result.stdout)
    return {t["name"]: t.get("counters", {}) for t in status.get("tenants", [])}


def counter_changes(before, after):
    """{tenant: {counter: increase}} between two tenant_counters() samples."""
    return {
        tenant: {k: v - before.get(tenant, {}).get(k, 0) for k, v in counters.items()
                 if isinstance(v, int)}
        for tenant, counters in after.items()
    }


def start_siphost(label, siphost_bin, config, workdir, timeout=READY_TIMEOUT):
    """Runs siphost (cwd: the repository) until it logs "siphost ready" (within `timeout` s)."""
    path = workdir / f"{label}.toml"
    path.write_text(config.text)
    log_path = workdir / f"{label}.log"
    env = dict(os.environ, SIPHOST_CACHE_DIR=str(workdir / "cache"))
    proc = spawn([siphost_bin, "run", "-c", path], log_path, cwd=ROOT, env=env)
    wait_for(
        lambda: "siphost ready" in Path(log_path).read_text(errors="replace"),
        f"{label} (siphost ready)",
        proc,
        log_path,
        timeout=timeout,
    )
    return proc, log_path


def start_kamailio(label, port, next_hop, workdir, template=BENCH / "kamailio-relay.cfg",
                   pkg_mib=16, shm_mib=512):
    """Runs Kamailio with a config template (bench/kamailio-relay.cfg unless told) until
    it answers an OPTIONS; `pkg_mib` is each process's private memory (-M), `shm_mib` the
    shared memory (-m). @LISTEN_UDP@ and @LISTEN_TCP@ become 127.0.0.1:port (free for
    both, see free_port), @NEXT_HOP@ the next hop; a placeholder left over is an error."""
    text = (
        Path(template).read_text()
        .replace("@LISTEN_UDP@", f"{LOOPBACK}:{port}")
        .replace("@LISTEN_TCP@", f"{LOOPBACK}:{port}")
        .replace("@NEXT_HOP@", next_hop)
    )
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        sys.exit(f"{template}: placeholders the bench does not fill: {', '.join(left)}")
    config = workdir / f"{label}.cfg"
    config.write_text(text)
    rundir = workdir / f"{label}-run"
    rundir.mkdir()
    log_path = workdir / f"{label}.log"
    proc = spawn(
        ["kamailio", "-f", config, "-DD", "-E", "-m", str(shm_mib), "-M", str(pkg_mib),
         "-P", rundir / "kamailio.pid", "-Y", rundir],
        log_path,
    )
    wait_for(lambda: options_ping(port), f"{label} (OPTIONS)", proc, log_path)
    return proc, log_path


def start_callee(workdir, scenario="uas.xml"):
    """One SIPp callee answering 200 at once; returns (proc, next hop URI)."""
    port = free_port()
    log_path = workdir / "callee.log"
    proc = spawn(
        ["sipp", "-sf", BENCH / "sipp" / scenario, "-i", LOOPBACK, "-p", port,
         "-cp", free_port(), "-t", "u1", "-nostdin"],
        log_path,
        cwd=workdir,
    )
    wait_for(lambda: udp_bound(port), "callee", proc, log_path)
    return proc, f"sip:{LOOPBACK}:{port}"


def start_caller(name, port, rate, calls, workdir, scenario="uac.xml", rtt=False):
    """A SIPp caller placing `calls` calls at `rate`/s to 127.0.0.1:port (in workdir)."""
    args = [
        "sipp", f"{LOOPBACK}:{port}", "-sf", BENCH / "sipp" / scenario,
        "-i", LOOPBACK, "-p", free_port(), "-cp", free_port(), "-t", "u1",
        "-r", rate, "-m", calls, "-l", max(rate * 10, 100),
        # A call whose next message is lost fails after 5 s instead of retransmitting
        # for a minute; the whole caller is bounded too.
        "-recv_timeout", "5000", "-timeout", f"{calls // max(rate, 1) + 60}s",
        "-nostdin", "-trace_stat", "-stf", workdir / f"{name}.csv", "-fd", "1",
        "-trace_err", "-error_file", workdir / f"{name}-errors.log",
    ]
    cwd = workdir
    if rtt:
        # One row per call: the INVITE -> 200 time of the scenario's "invite" RTD, in a
        # file SIPp names itself, so each caller gets a directory of its own.
        args += ["-trace_rtt", "-rtt_freq", "1"]
        cwd = workdir / name
        cwd.mkdir()
    return spawn(args, workdir / f"{name}.log", cwd=cwd)


def wait_caller(proc, name, workdir, timeout):
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        sys.exit(f"caller {name} did not finish; screen {workdir / (name + '.log')}:\n"
                 f"{tail(workdir / (name + '.log'))}")
    if proc in STARTED:
        STARTED.remove(proc)
    return proc.returncode


def sipp_counters(stat_path):
    """(created, successful, failed) from the last row of a -trace_stat file."""
    path = Path(stat_path)
    rows = [line.split(";") for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if len(rows) < 2:
        sys.exit(f"no statistics in {stat_path}")
    header, last = rows[0], rows[-1]
    value = {name: last[i] for i, name in enumerate(header) if i < len(last)}
    return (
        int(value["TotalCallCreated"]),
        int(value["SuccessfulCall(C)"]),
        int(value["FailedCall(C)"]),
    )


def sipp_rtts_ms(directory):
    """Every per-call response time (ms) SIPp wrote with -trace_rtt into directory."""
    times = []
    for path in Path(directory).glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            fields = line.split(";")
            if len(fields) >= 2 and fields[1].strip():
                times.append(float(fields[1]))
    return times


def percentile(values, fraction):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def median(values):
    values = [v for v in values if v == v]  # NaN-free
    return statistics.median(values) if values else float("nan")


def git_commit():
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    commit = result.stdout.strip() or "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def append_results(results_dir, bench, records):
    """Appends one JSON line per record to RESULTS/<bench>-<date>.jsonl; returns the path."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{bench}-{datetime.date.today().isoformat()}.jsonl"
    with open(path, "a") as out:
        for record in records:
            out.write(json.dumps(record, sort_keys=True) + "\n")
    return path


def run_context():
    """What every raw record carries: when, which commit, on what machine."""
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "load1": os.getloadavg()[0],
    }


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def remove_tree(path):
    for entry in sorted(Path(path).rglob("*"), reverse=True):
        if entry.is_dir() and not entry.is_symlink():
            entry.rmdir()
        else:
            entry.unlink()
    Path(path).rmdir()
