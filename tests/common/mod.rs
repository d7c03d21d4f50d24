//! Harness for siphost's end-to-end tests: starts real peers (siphost, SIPp,
//! Kamailio) on loopback with per-test ports and stops all of them on drop.
//!
//! Every peer runs in its own process group, logs into the test's scratch
//! directory, and is killed (group-wide) when its handle drops, also while a
//! test panics; the scratch directory is kept on failure for inspection.
//! Readiness is polled (log line, bound socket, SIP OPTIONS), never slept for.

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write as _};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Every peer binds this address only.
pub const LOOPBACK: &str = "127.0.0.1";

/// How long a peer may take to become ready before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between readiness and exit polls.
const POLL: Duration = Duration::from_millis(20);
/// How long a peer gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// Lines of a peer's log quoted in a failure message.
const LOG_TAIL_LINES: usize = 60;

/// Ports handed to tests lie below Linux's ephemeral range (32768+), so the
/// kernel never gives them to the peers' own outgoing sockets.
const PORT_RANGE_START: u16 = 20000;
const PORT_RANGE_END: u16 = 32000;

/// SIP transport a flow runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// SIPp's `-t` mode: one socket for all calls.
    pub fn sipp_mode(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }

    /// The transport token in a Via header, as a POSIX regex accepting either case.
    pub fn via_regex(self) -> &'static str {
        match self {
            Transport::Udp => "(UDP|udp)",
            Transport::Tcp => "(TCP|tcp)",
        }
    }

    /// Suffix for a SIP URI that must be reached over this transport.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        }
    }

    /// The name siphost's config uses for a listener.
    pub fn config_name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A SIP URI for `127.0.0.1:port` over `transport`.
pub fn sip_uri(port: u16, transport: Transport) -> String {
    format!("sip:{LOOPBACK}:{port}{}", transport.uri_param())
}

// ---------------------------------------------------------------------------
// Ports

/// Consecutive loopback ports free for both UDP and TCP, held for the test's
/// lifetime through per-port lock files so that parallel tests — threads of
/// one binary or separate processes (nextest) — never pick the same ones.
pub struct PortBlock {
    first: u16,
    len: u16,
    _locks: Vec<File>,
}

impl PortBlock {
    /// Reserves `len` consecutive ports, starting the search at an offset
    /// derived from `tag` (the test name) so different tests rarely probe the
    /// same ports.
    pub fn reserve(tag: &str, len: u16) -> PortBlock {
        assert!(len > 0 && len < 100, "unreasonable port block size {len}");
        let lock_dir = std::env::temp_dir().join("siphost-test-ports");
        fs::create_dir_all(&lock_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", lock_dir.display()));
        let span = PORT_RANGE_END - PORT_RANGE_START - len;
        let mut hasher = DefaultHasher::new();
        tag.hash(&mut hasher);
        let start = (hasher.finish() % u64::from(span)) as u16;
        let mut offset = 0u16;
        while offset < span {
            let first = PORT_RANGE_START + (start + offset) % span;
            if let Some(locks) = try_lock_block(&lock_dir, first, len) {
                return PortBlock {
                    first,
                    len,
                    _locks: locks,
                };
            }
            offset += len;
        }
        panic!("no {len} consecutive free loopback ports in {PORT_RANGE_START}..{PORT_RANGE_END}");
    }

    /// The `index`-th port of the block.
    pub fn port(&self, index: u16) -> u16 {
        assert!(
            index < self.len,
            "port index {index} outside a block of {}",
            self.len
        );
        self.first + index
    }
}

fn try_lock_block(lock_dir: &Path, first: u16, len: u16) -> Option<Vec<File>> {
    let mut locks = Vec::with_capacity(usize::from(len));
    for port in first..first + len {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_dir.join(format!("{port}.lock")))
            .ok()?;
        lock.try_lock().ok()?;
        if !port_is_free(port) {
            return None;
        }
        locks.push(lock);
    }
    Some(locks)
}

fn port_is_free(port: u16) -> bool {
    UdpSocket::bind((LOOPBACK, port)).is_ok() && TcpListener::bind((LOOPBACK, port)).is_ok()
}

/// Whether some process has `port` bound on loopback or the wildcard address:
/// any UDP socket, or a listening TCP socket. Read from /proc/net, so the
/// probe never takes the port itself.
pub fn port_is_bound(transport: Transport, port: u16) -> bool {
    let (table, listening_only) = match transport {
        Transport::Udp => ("/proc/net/udp", false),
        Transport::Tcp => ("/proc/net/tcp", true),
    };
    let Ok(text) = fs::read_to_string(table) else {
        return false;
    };
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
            return false;
        };
        let Some((ip, port_hex)) = local.split_once(':') else {
            return false;
        };
        // /proc/net prints IPv4 addresses as host-order (little-endian) hex.
        let ip_matches = ip == "0100007F" || ip == "00000000";
        let state_matches = !listening_only || *state == "0A";
        ip_matches && state_matches && u16::from_str_radix(port_hex, 16) == Ok(port)
    })
}

// ---------------------------------------------------------------------------
// Scratch directory and templates

/// The test's scratch directory: rendered configs, scenarios and peer logs.
/// Removed when the test passes, kept (and its path printed) when it panics.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("siphost-e2e-{test}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("create scratch dir: {e}"));
        let path = dir.path().to_path_buf();
        Scratch {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the scratch directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("test files kept in {}", dir.keep().display());
        }
    }
}

/// The repository's `tests/` directory (the test binaries belong to `host/`).
pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests")
}

/// Reads `tests/<relative>` and replaces every `@KEY@` with its value. Panics
/// if a given key does not occur or a placeholder is left unreplaced, so a
/// typo cannot silently disable a check.
pub fn render(relative: &str, vars: &[(&str, String)]) -> String {
    let path = tests_dir().join(relative);
    let mut text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (key, value) in vars {
        let placeholder = format!("@{key}@");
        assert!(
            text.contains(&placeholder),
            "{relative} has no placeholder {placeholder}"
        );
        text = text.replace(&placeholder, value);
    }
    if let Some(left) = leftover_placeholder(&text) {
        panic!("{relative}: placeholder {left} was not given a value");
    }
    text
}

fn leftover_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(start) = rest.find('@') {
        let after = &rest[start + 1..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || *b == b'_')
            .count();
        if name_len > 0 && after.as_bytes().get(name_len) == Some(&b'@') {
            return Some(&rest[start..start + name_len + 2]);
        }
        rest = after;
    }
    None
}

// ---------------------------------------------------------------------------
// Processes

/// A spawned peer in its own process group, with its output in a log file.
/// Dropping it terminates the whole group (SIGTERM, then SIGKILL).
pub struct Peer {
    name: String,
    child: Child,
    log: PathBuf,
    reaped: Option<ExitStatus>,
    stopped: bool,
}

impl Peer {
    /// Spawns `command` with stdin closed and stdout/stderr appended to `log`.
    /// `stderr_piped` leaves stderr as a pipe for the caller to read.
    fn spawn(name: &str, mut command: Command, log: &Path, stderr_piped: bool) -> Peer {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = if stderr_piped {
            Stdio::piped()
        } else {
            Stdio::from(
                out.try_clone()
                    .unwrap_or_else(|e| panic!("dup {}: {e}", log.display())),
            )
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({command:?}): {e}"));
        Peer {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
            reaped: None,
            stopped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the peer's log, for failure messages.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log, LOG_TAIL_LINES)
    }

    /// Exit status if the peer has exited (reaping it), else None.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    /// Waits up to `timeout` for the peer to exit; on timeout kills it and
    /// panics with its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() >= deadline {
                self.stop();
                panic!(
                    "{} did not exit within {timeout:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Polls `ready` until it holds; panics (with the log) if the peer exits
    /// or `READY_TIMEOUT` passes first.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready() {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before {what}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not ready ({what}) within {READY_TIMEOUT:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Terminates the peer's process group: SIGTERM, then SIGKILL after a
    /// grace. The group is killed even when the leader has already exited,
    /// because Kamailio's workers can outlive their main process.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pgid = self.child.id();
        if self.exited().is_none() {
            signal_group(pgid, "TERM");
            let deadline = Instant::now() + TERM_GRACE;
            while self.exited().is_none() && Instant::now() < deadline {
                thread::sleep(POLL);
            }
        }
        signal_group(pgid, "KILL");
        if self.reaped.is_none() {
            self.reaped = self.child.wait().ok();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` to the process group led by `pgid`. Uses kill(1) because
/// the standard library only signals single processes.
fn signal_group(pgid: u32, signal: &str) {
    // Failure means the group is already gone, which is what we want.
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The first `lines` lines of a text file (lossy UTF-8), or a note why not.
pub fn file_head(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .take(lines)
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("<{}: {e}>", path.display()),
    }
}

/// The last `lines` lines of a text file (lossy UTF-8), or a note why not.
pub fn file_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<{}: {e}>", path.display()),
    }
}

// ---------------------------------------------------------------------------
// siphost

/// A running `siphost run -c <config>`.
pub struct Siphost {
    pub peer: Peer,
}

impl Siphost {
    /// Writes `config` (TOML) into the scratch directory, starts siphost and
    /// waits for its `siphost ready` log line.
    pub fn start(scratch: &Scratch, config: &str) -> Siphost {
        let config_path = scratch.write("siphost.toml", config);
        let log = scratch.path().join("siphost.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_siphost"));
        command.arg("run").arg("-c").arg(&config_path);
        let mut peer = Peer::spawn("siphost", command, &log, true);
        let Some(stderr) = peer.child.stderr.take() else {
            panic!("siphost stderr was not piped");
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let log_for_thread = log.clone();
        // Copies stderr into the log and reports the readiness line; ends
        // when siphost closes stderr (exits).
        thread::spawn(move || {
            let Ok(mut sink) = OpenOptions::new().append(true).open(&log_for_thread) else {
                return;
            };
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(sink, "{line}");
                if line.contains("siphost ready")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match ready_rx.recv_timeout(POLL) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    let status = peer.exited();
                    peer.stop();
                    panic!(
                        "siphost did not log `siphost ready` within {READY_TIMEOUT:?} \
                         (exit status: {status:?}); log {}:\n{}",
                        log.display(),
                        peer.log_tail()
                    );
                }
            }
        }
        Siphost { peer }
    }
}

/// A wasm32-wasip2 filter component built with `--profile wasm`: in `$SIPHOST_FILTER_DIR`,
/// else in `<target>/wasm32-wasip2/wasm` beside this test binary's target dir.
pub fn wasm_filter(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SIPHOST_FILTER_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("test binary path");
            exe.ancestors()
                .nth(3)
                .expect("target dir")
                .join("wasm32-wasip2")
                .join("wasm")
        }
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} missing: build the filters first (cargo build --profile wasm --target wasm32-wasip2 -p <crate>)",
        path.display()
    );
    path
}

/// Kamailio's uacreg table, version 5, as a Kamailio user has it (with its `version` row).
pub const UACREG_V5_SCHEMA: &str = "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, \
     table_version INTEGER DEFAULT 0 NOT NULL);\n\
     INSERT INTO version VALUES ('uacreg', 5);\n\
     CREATE TABLE uacreg (id INTEGER PRIMARY KEY NOT NULL, l_uuid VARCHAR(64) DEFAULT '' NOT NULL, \
     l_username VARCHAR(64) DEFAULT '' NOT NULL, l_domain VARCHAR(64) DEFAULT '' NOT NULL, \
     r_username VARCHAR(64) DEFAULT '' NOT NULL, r_domain VARCHAR(64) DEFAULT '' NOT NULL, \
     realm VARCHAR(64) DEFAULT '' NOT NULL, auth_username VARCHAR(64) DEFAULT '' NOT NULL, \
     auth_password VARCHAR(64) DEFAULT '' NOT NULL, auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL, \
     auth_proxy VARCHAR(255) DEFAULT '' NOT NULL, expires INTEGER DEFAULT 0 NOT NULL, \
     flags INTEGER DEFAULT 0 NOT NULL, reg_delay INTEGER DEFAULT 0 NOT NULL, \
     contact_addr VARCHAR(255) DEFAULT '' NOT NULL, socket VARCHAR(128) DEFAULT '' NOT NULL, \
     CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid));\n";

/// Runs the sqlite3 shell on `db` with `sql` on stdin.
pub fn sqlite(db: &Path, sql: &str) {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sqlite3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("write sql");
    assert!(
        child.wait().expect("sqlite3 exits").success(),
        "sqlite3 failed"
    );
}

/// A siphost config listening on UDP and TCP `port`, record-routing and
/// forwarding every request without a Route to `default_route`.
pub fn siphost_proxy_config(port: u16, default_route: &str, t1_ms: u32) -> String {
    format!(
        r#"[log]
level = "info"

[[listen]]
transport = "udp"
address = "{LOOPBACK}:{port}"

[[listen]]
transport = "tcp"
address = "{LOOPBACK}:{port}"

[transaction]
t1_ms = {t1_ms}

[proxy]
record_route = true
default_route = "{default_route}"
"#
    )
}

// ---------------------------------------------------------------------------
// Kamailio

/// A Kamailio 5.6 in the foreground (`-DD -E`), listening on UDP and TCP
/// `port`, with its pid file and runtime directory inside the scratch dir.
pub struct Kamailio {
    pub peer: Peer,
    pub port: u16,
}

impl Kamailio {
    /// Renders `tests/kamailio/<config>` (placeholders `LISTEN_UDP`,
    /// `LISTEN_TCP`, `NEXT_HOP`), starts Kamailio and waits until it answers
    /// an OPTIONS over UDP and listens on TCP.
    pub fn start(scratch: &Scratch, config: &str, port: u16, next_hop: &str) -> Kamailio {
        let address = format!("{LOOPBACK}:{port}");
        let kamailio = Self::start_with(
            scratch,
            config,
            port,
            &[
                ("LISTEN_UDP", address.clone()),
                ("LISTEN_TCP", address),
                ("NEXT_HOP", next_hop.to_owned()),
            ],
        );
        Self::await_tcp(kamailio)
    }

    fn await_tcp(mut kamailio: Kamailio) -> Kamailio {
        let port = kamailio.port;
        kamailio
            .peer
            .wait_until("listening on TCP", || port_is_bound(Transport::Tcp, port));
        kamailio
    }

    /// Renders `tests/kamailio/<config>` with `vars`, starts Kamailio and
    /// waits until it answers an OPTIONS over UDP on `port`.
    pub fn start_with(
        scratch: &Scratch,
        config: &str,
        port: u16,
        vars: &[(&str, String)],
    ) -> Kamailio {
        let rendered = render(&format!("kamailio/{config}"), vars);
        let config_path = scratch.write(&format!("kamailio-{port}.cfg"), &rendered);
        let runtime_dir = scratch.path().join(format!("kamailio-{port}-run"));
        fs::create_dir_all(&runtime_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", runtime_dir.display()));
        let mut command = Command::new("kamailio");
        command
            .arg("-f")
            .arg(&config_path)
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-P")
            .arg(runtime_dir.join("kamailio.pid"))
            .arg("-Y")
            .arg(&runtime_dir);
        let log = scratch.path().join(format!("kamailio-{port}.log"));
        let mut peer = Peer::spawn("kamailio", command, &log, false);
        peer.wait_until("answering OPTIONS on UDP", || sip_options_ping(port));
        Kamailio { peer, port }
    }
}

/// Sends one SIP OPTIONS over UDP to `127.0.0.1:port` and reports whether a
/// 200 came back within a short wait.
pub fn sip_options_ping(port: u16) -> bool {
    let Ok(socket) = UdpSocket::bind((LOOPBACK, 0)) else {
        return false;
    };
    let Ok(local) = socket.local_addr() else {
        return false;
    };
    if socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return false;
    }
    let local_port = local.port();
    let request = format!(
        "OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {LOOPBACK}:{local_port};branch=z9hG4bK-ping-{local_port}\r\n\
         From: <sip:ping@{LOOPBACK}>;tag=ping{local_port}\r\n\
         To: <sip:{LOOPBACK}:{port}>\r\n\
         Call-ID: ping-{local_port}@{LOOPBACK}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    if socket
        .send_to(request.as_bytes(), (LOOPBACK, port))
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"SIP/2.0 200"),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// SIPp

/// Checks run by a SIPp scenario on one received message: `<ereg>` actions on
/// the n-th occurrence of a header with `check_it` (the call fails when a
/// check fails) and one `<log>` line naming every captured value.
pub struct HeaderChecks {
    label: String,
    eregs: Vec<String>,
    /// (header, variable) of every `matches` check, in order.
    matched: Vec<(String, String)>,
    /// Variables of every check, for the log line.
    captured: Vec<String>,
}

impl HeaderChecks {
    /// `label` starts the log line and names the variables (letters only).
    pub fn new(label: &str) -> HeaderChecks {
        assert!(
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase()),
            "check label must be lowercase letters: {label}"
        );
        HeaderChecks {
            label: label.to_owned(),
            eregs: Vec::new(),
            matched: Vec::new(),
            captured: Vec::new(),
        }
    }

    fn variable(&self, header: &str, nth: u32) -> String {
        let short: String = header
            .bytes()
            .filter(u8::is_ascii_alphabetic)
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect();
        format!("{}{short}{nth}", self.label)
    }

    /// The `nth` (1-based) `header` must exist and match POSIX ERE `regex`.
    pub fn matches(mut self, header: &str, nth: u32, regex: &str) -> HeaderChecks {
        // SIPp 3.6's XML parser rejects these characters inside attributes.
        assert!(
            !regex.contains(['<', '"', '&']),
            "regex not embeddable in a SIPp attribute: {regex}"
        );
        let variable = self.variable(header, nth);
        self.eregs.push(format!(
            r#"<ereg regexp="{regex}" search_in="hdr" header="{header}:" occurrence="{nth}" check_it="true" assign_to="{variable}"/>"#
        ));
        self.matched.push((header.to_owned(), variable.clone()));
        self.captured.push(variable);
        self
    }

    /// There must be no `nth` occurrence of `header`.
    pub fn absent(mut self, header: &str, nth: u32) -> HeaderChecks {
        let variable = self.variable(header, nth);
        self.eregs.push(format!(
            r#"<ereg regexp="." search_in="hdr" header="{header}:" occurrence="{nth}" check_it_inverse="true" assign_to="{variable}"/>"#
        ));
        self.captured.push(variable);
        self
    }

    /// The `<ereg>` and `<log>` actions, for an `<action>` element.
    pub fn xml(&self) -> String {
        let mut message = format!("checked {}:", self.label);
        for variable in &self.captured {
            let _ = write!(message, " {variable}=[${variable}]");
        }
        let mut out = self.eregs.join("\n      ");
        let _ = write!(out, "\n      <log message=\"{message}\"/>");
        out
    }

    /// Header lines re-sending the matched occurrences of `header` in order
    /// (e.g. an INVITE's Via set in a 487 sent after the CANCEL arrived).
    pub fn resend_lines(&self, header: &str) -> String {
        self.matched
            .iter()
            .filter(|(name, _)| name == header)
            .map(|(_, variable)| format!("{header}:[${variable}]"))
            .collect::<Vec<_>>()
            .join("\n      ")
    }

    /// How many `checked <label>:` lines a SIPp action log holds.
    pub fn count_in(&self, log: &str) -> usize {
        let marker = format!("checked {}:", self.label);
        log.lines().filter(|line| line.starts_with(&marker)).count()
    }
}

/// Regex for a Via sent by `127.0.0.1:port` over `transport` with an RFC 3261
/// branch. It matches the whole value, so the captured variable can be re-sent.
pub fn via_regex(transport: Transport, port: u16) -> String {
    format!(
        "^ *SIP/2[.]0/{} 127[.]0[.]0[.]1:{port};(.*;)?branch=z9hG4bK.*",
        transport.via_regex()
    )
}

/// Regex for a loose-routing Record-Route entry pointing at `127.0.0.1:port`.
/// It matches the whole value, so the captured variable can be re-sent.
pub fn record_route_regex(port: u16) -> String {
    format!("^ *.?sip:127[.]0[.]0[.]1:{port};(.*;)?lr.*")
}

/// Where SIPp runs and what it talks to.
pub struct SippRole {
    /// Name in logs and file names ("caller", "callee").
    pub name: &'static str,
    /// Rendered scenario file.
    pub scenario: PathBuf,
    pub transport: Transport,
    /// Five ports: SIP, control, media (media uses +2 and +4).
    pub ports: PortBlock,
    /// The UAC's destination; None for a UAS.
    pub remote: Option<u16>,
    /// Calls after which SIPp exits (`-m`).
    pub calls: u32,
    /// New calls per second (`-r`), UAC only.
    pub rate: Option<u32>,
    /// SIPp's own global timeout (`-timeout`, with `-timeout_error`).
    pub timeout: Duration,
}

/// A running SIPp with its trace files.
pub struct Sipp {
    pub peer: Peer,
    pub port: u16,
    calls: u32,
    timeout: Duration,
    errors: PathBuf,
    logs: PathBuf,
    messages: PathBuf,
    _ports: PortBlock,
}

impl Sipp {
    /// Starts SIPp; for a UAS, also waits until its SIP socket is bound.
    pub fn start(scratch: &Scratch, role: SippRole) -> Sipp {
        Sipp::start_from(scratch, role, LOOPBACK, &[])
    }

    /// As [`Sipp::start`], bound to `local_ip` (another loopback address, to be a
    /// different source) and with `extra` arguments (e.g. `-au`/`-ap` credentials).
    pub fn start_from(scratch: &Scratch, role: SippRole, local_ip: &str, extra: &[&str]) -> Sipp {
        let port = role.ports.port(0);
        let file = |kind: &str| {
            scratch
                .path()
                .join(format!("sipp-{}-{kind}.log", role.name))
        };
        let (errors, logs, messages) = (file("errors"), file("actions"), file("messages"));
        let mut command = Command::new("sipp");
        if let Some(remote) = role.remote {
            command.arg(format!("{LOOPBACK}:{remote}"));
        }
        command
            .arg("-sf")
            .arg(&role.scenario)
            .args(["-i", local_ip, "-t", role.transport.sipp_mode()])
            .args(["-p", &port.to_string()])
            .args(["-cp", &role.ports.port(1).to_string()])
            .args(["-mp", &role.ports.port(2).to_string()])
            .args(["-m", &role.calls.to_string()])
            .args(["-timeout", &format!("{}s", role.timeout.as_secs())])
            .args(["-timeout_error", "-nostdin"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors)
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(&logs)
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&messages);
        if let Some(rate) = role.rate {
            command.args(["-r", &rate.to_string()]);
        }
        command.args(extra);
        let log = file("screen");
        let mut peer = Peer::spawn(&format!("sipp {}", role.name), command, &log, false);
        if role.remote.is_none() {
            peer.wait_until("SIP socket bound", || port_is_bound(role.transport, port));
        }
        Sipp {
            peer,
            port,
            calls: role.calls,
            timeout: role.timeout,
            errors,
            logs,
            messages,
            _ports: role.ports,
        }
    }

    /// Waits for SIPp to finish (bounded by its own timeout plus a margin) and
    /// asserts exit code 0: every one of its calls succeeded.
    pub fn assert_all_calls_succeeded(&mut self) {
        let status = self.peer.wait_exit(self.timeout + Duration::from_secs(10));
        if status.code() != Some(0) {
            panic!(
                "{} exited with {status} (0 = all {} calls succeeded)\n\
                 --- errors (head of {}):\n{}\n--- actions log:\n{}\n--- screen:\n{}\n--- messages (tail):\n{}",
                self.peer.name,
                self.calls,
                self.errors.display(),
                file_head(&self.errors, 40),
                file_tail(&self.logs, 20),
                self.peer.log_tail(),
                file_tail(&self.messages, 80),
            );
        }
    }

    /// The lines written by the scenario's `<log>` actions.
    pub fn action_log(&self) -> String {
        fs::read_to_string(&self.logs).unwrap_or_default()
    }

    /// Asserts that `checks` ran once per call (they fail the call when a
    /// header does not match, so this proves each call was inspected).
    pub fn assert_checked_every_call(&self, checks: &HeaderChecks) {
        let log = self.action_log();
        let seen = checks.count_in(&log);
        assert_eq!(
            seen,
            self.calls as usize,
            "{}: expected {} `checked {}` lines in {}, got {seen}:\n{}",
            self.peer.name,
            self.calls,
            checks.label,
            self.logs.display(),
            file_tail(&self.logs, 20)
        );
    }
}
