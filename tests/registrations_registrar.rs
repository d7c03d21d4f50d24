//! Remote registrations end to end: siphost with the uac filter and an SQLite
//! uacreg table registers accounts with a real Kamailio 5.6 registrar
//! (auth_db, www_challenge with qop=auth) over UDP sockets.
//!
//! The registrar logs one `REG user=… ci=… cs=… auth=…` line per REGISTER it
//! receives; the tests count those lines and read siphost's `uac.reg_dump`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{Kamailio, LOOPBACK, PortBlock, Scratch, Siphost, UACREG_V5_SCHEMA, sqlite};
use serde_json::Value;

fn uac_wasm() -> PathBuf {
    common::wasm_filter("uac_filter")
}

/// One account: its uacreg row and its subscriber row at the registrar.
struct Account {
    uuid: String,
    password: String,
    /// What the uacreg row says (a wrong one for the wrong-password test).
    configured_password: String,
    expires: u32,
}

fn accounts(prefix: &str, n: usize, expires: u32) -> Vec<Account> {
    (0..n)
        .map(|i| Account {
            uuid: format!("{prefix}{i:04}"),
            password: format!("pw-{prefix}-{i}"),
            configured_password: format!("pw-{prefix}-{i}"),
            expires,
        })
        .collect()
}

const REALM: &str = "reg.test";

/// The registrar's subscriber table (Kamailio's auth_db schema, plain passwords).
fn registrar_db(scratch: &Scratch, accounts: &[Account]) -> PathBuf {
    let db = scratch.path().join("registrar.db");
    let mut sql = String::from(
        "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL);\n\
         INSERT INTO version VALUES ('subscriber', 7);\n\
         CREATE TABLE subscriber (id INTEGER PRIMARY KEY NOT NULL, username VARCHAR(64) DEFAULT '' NOT NULL, \
         domain VARCHAR(64) DEFAULT '' NOT NULL, password VARCHAR(64) DEFAULT '' NOT NULL, \
         ha1 VARCHAR(128) DEFAULT '' NOT NULL, ha1b VARCHAR(128) DEFAULT '' NOT NULL);\n\
         BEGIN;\n",
    );
    for a in accounts {
        sql.push_str(&format!(
            "INSERT INTO subscriber (username, domain, password) VALUES ('{}', '{REALM}', '{}');\n",
            a.uuid, a.password
        ));
    }
    sql.push_str("COMMIT;\n");
    sqlite(&db, &sql);
    db
}

/// siphost's uacreg table (Kamailio's schema, version 5), created like a
/// Kamailio user would have it.
fn uacreg_db(scratch: &Scratch, accounts: &[Account], registrar: u16) -> PathBuf {
    let db = scratch.path().join("uac.db");
    let mut sql = format!("{UACREG_V5_SCHEMA}BEGIN;\n");
    for a in accounts {
        sql.push_str(&format!(
            "INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, realm, \
             auth_username, auth_password, auth_proxy, expires) VALUES \
             ('{u}', 'local-{u}', 'local.test', '{u}', '{REALM}', '{REALM}', '{u}', '{p}', \
             'sip:{LOOPBACK}:{registrar}', {e});\n",
            u = a.uuid,
            p = a.configured_password,
            e = a.expires,
        ));
    }
    sql.push_str("COMMIT;\n");
    sqlite(&db, &sql);
    db
}

/// The registrar's settings (tests/kamailio/registrar.cfg): Kamailio's min_expires, the
/// digest algorithm, a delay over each REGISTER before it answers, and how long a nonce
/// stays valid (auth's nonce_expire).
struct RegistrarCfg<'a> {
    min_expires: u32,
    algorithm: &'a str,
    delay_us: u32,
    nonce_expire: u32,
}

impl Default for RegistrarCfg<'_> {
    fn default() -> Self {
        RegistrarCfg {
            min_expires: 5,
            algorithm: "MD5",
            delay_us: 0,
            nonce_expire: 60,
        }
    }
}

impl RegistrarCfg<'_> {
    fn start(&self, scratch: &Scratch, port: u16, db: &Path) -> Kamailio {
        Kamailio::start_with(
            scratch,
            "registrar.cfg",
            port,
            &[
                ("LISTEN_UDP", format!("{LOOPBACK}:{port}")),
                ("DB", db.display().to_string()),
                ("MIN_EXPIRES", self.min_expires.to_string()),
                ("ALGORITHM", self.algorithm.to_owned()),
                ("DELAY_US", self.delay_us.to_string()),
                ("NONCE_EXPIRE", self.nonce_expire.to_string()),
            ],
        )
    }
}

fn siphost_config(sip: u16, admin: u16, db: &Path, extra_modparams: &str) -> String {
    format!(
        r#"[log]
level = "info"

[[listen]]
transport = "udp"
address = "{LOOPBACK}:{sip}"

[transaction]
t1_ms = 100

[admin]
listen = "{LOOPBACK}:{admin}"

[[tenant]]
name = "default"
listen = ["udp:{LOOPBACK}:{sip}"]
cpu_limit_ms = 50

[tenant.registrations]
db_url = "sqlite://{db}"

[tenant.access]
unidentified = "403"

[[tenant.access.endpoint]]
name = "local"
source = ["127.0.0.1/32"]

[[tenant.filter]]
path = "{wasm}"

[tenant.filter.config]
reg_contact_addr = "{LOOPBACK}:{sip}"
reg_keep_callid = 1
{extra_modparams}
"#,
        db = db.display(),
        wasm = uac_wasm().display(),
    )
}

/// `siphost rpc --json METHOD PARAMS…` against the admin endpoint.
fn rpc(admin: u16, method: &str, params: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_siphost"))
        .args([
            "rpc",
            "--admin",
            &format!("{LOOPBACK}:{admin}"),
            "--json",
            method,
        ])
        .args(params)
        .output()
        .expect("siphost rpc runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "siphost rpc {method} failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("rpc {method} answered {text:?}: {e}"))
}

/// The most REGISTERs the registrar received in one second.
fn busiest_second(seen: &[Seen]) -> usize {
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    for s in seen {
        *per_second.entry(s.at).or_default() += 1;
    }
    per_second.into_values().max().unwrap_or(0)
}

/// Records registered now (`uac_reg_status` 1: online and the binding not
/// over), by `uac.reg_dump`.
fn online(admin: u16) -> usize {
    rpc(admin, "uac.reg_dump", &[])
        .as_array()
        .expect("reg_dump answers a list")
        .iter()
        .filter(|r| r["status"] == 1)
        .count()
}

/// The admin endpoint's Prometheus text.
fn metrics(admin: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((LOOPBACK, admin)).expect("admin");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// One REGISTER as the registrar logged it.
#[derive(Debug, Clone)]
struct Seen {
    user: String,
    call_id: String,
    /// The CSeq number.
    cseq: String,
    authorized: bool,
    /// UNIX second the registrar received it.
    at: u64,
    /// The digest algorithm of an authorized REGISTER (MD5 or SHA-256).
    algorithm: Option<String>,
    /// The UDP port it came from.
    source_port: Option<u16>,
}

fn registers(kamailio: &Kamailio) -> Vec<Seen> {
    let text = std::fs::read_to_string(kamailio.peer.log_path()).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = &line[line.find("REG user=")? + "REG user=".len()..];
            let mut parts = rest.split_whitespace();
            let user = parts.next()?.to_owned();
            let call_id = parts.next()?.strip_prefix("ci=")?.to_owned();
            let cseq = parts.next()?.strip_prefix("cs=")?.to_owned();
            let authorized = parts.next()? == "auth=yes";
            let at = parts.next()?.strip_prefix("t=")?.parse().ok()?;
            let (mut algorithm, mut source_port) = (None, None);
            for part in parts {
                if let Some(alg) = part.strip_prefix("alg=") {
                    algorithm = Some(alg.to_owned());
                } else if let Some(port) = part.strip_prefix("sp=") {
                    source_port = port.parse().ok();
                }
            }
            Some(Seen {
                user,
                call_id,
                cseq,
                authorized,
                at,
                algorithm,
                source_port,
            })
        })
        .collect()
}

/// A REGISTER the registrar accepted (its `REGOK` line).
#[derive(Debug, Clone)]
struct Accepted {
    user: String,
    call_id: String,
    cseq: String,
    /// UNIX second.
    at: u64,
}

fn accepted(kamailio: &Kamailio) -> Vec<Accepted> {
    let text = std::fs::read_to_string(kamailio.peer.log_path()).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = &line[line.find("REGOK user=")? + "REGOK user=".len()..];
            let mut parts = rest.split_whitespace();
            Some(Accepted {
                user: parts.next()?.to_owned(),
                call_id: parts.next()?.strip_prefix("ci=")?.to_owned(),
                cseq: parts.next()?.strip_prefix("cs=")?.to_owned(),
                at: parts.next()?.strip_prefix("t=")?.parse().ok()?,
            })
        })
        .collect()
}

fn kill_9(siphost: &mut Siphost) {
    let pid = siphost.peer.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill runs")
            .success()
    );
    siphost.peer.wait_exit(Duration::from_secs(5));
}

/// 1,000 accounts register (digest, qop=auth) and each refreshes its
/// binding in the same Call-ID (reg_keep_callid) before it ends; refreshes
/// are spread, not sent in one burst.
#[test]
fn thousand_accounts_register_and_refresh() {
    const N: usize = 1000;
    const EXPIRES: u32 = 12;
    let scratch = Scratch::new("reg-thousand");
    let ports = PortBlock::reserve("registrations_registrar::thousand", 3);
    let (sip, admin, registrar) = (ports.port(0), ports.port(1), ports.port(2));
    let accounts = accounts("t", N, EXPIRES);
    let kamailio =
        RegistrarCfg::default().start(&scratch, registrar, &registrar_db(&scratch, &accounts));
    let db = uacreg_db(&scratch, &accounts, registrar);
    let started = Instant::now();
    let _siphost = Siphost::start(&scratch, &siphost_config(sip, admin, &db, ""));
    wait_for("1,000 accounts online", Duration::from_secs(30), || {
        online(admin) == N
    });
    let registered_in = started.elapsed();
    // Every account got a challenge and then an authorized REGISTER.
    let first = registers(&kamailio);
    let authorized: usize = first.iter().filter(|s| s.authorized).count();
    assert!(authorized >= N, "{authorized} authorized REGISTERs");
    assert!(
        first
            .iter()
            .filter(|s| s.authorized)
            .all(|s| s.algorithm.as_deref() == Some("MD5")),
        "an answer to an MD5 challenge was not MD5"
    );
    // Refreshes come within 50–80 % of the 12 s binding.
    thread::sleep(Duration::from_secs(u64::from(EXPIRES)));
    let seen = registers(&kamailio);
    let mut per_user: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for s in seen.iter().filter(|s| s.authorized) {
        per_user.entry(&s.user).or_default().push(s);
    }
    let refreshed = per_user.values().filter(|v| v.len() >= 2).count();
    assert_eq!(refreshed, N, "accounts refreshed");
    // Refreshes answer the registrar's last challenge before it asks (reg_reuse_nonce):
    // the only unauthenticated REGISTERs are the first wave's (and its retransmissions),
    // and every refresh was accepted at once.
    // Read after `seen`, and after the registrar's answer to the last of those.
    thread::sleep(Duration::from_millis(500));
    let ok = accepted(&kamailio);
    let mut first_ok: HashMap<&str, u64> = HashMap::new();
    for a in &ok {
        first_ok.entry(&a.user).or_insert(a.at);
    }
    let late_challenges = seen
        .iter()
        .filter(|s| !s.authorized && first_ok.get(s.user.as_str()).is_some_and(|ok| s.at > *ok))
        .count();
    assert_eq!(late_challenges, 0, "refreshes sent without an answer");
    let ok_requests: std::collections::HashSet<(&str, &str)> = ok
        .iter()
        .map(|a| (a.call_id.as_str(), a.cseq.as_str()))
        .collect();
    let refused: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.authorized && !ok_requests.contains(&(s.call_id.as_str(), s.cseq.as_str())))
        .collect();
    assert!(
        refused.is_empty(),
        "authorized REGISTERs refused: {refused:?}"
    );
    for (user, seen) in &per_user {
        assert!(
            seen.iter().all(|s| s.call_id == seen[0].call_id),
            "{user} changed its Call-ID on refresh"
        );
    }
    assert_eq!(online(admin), N, "still online after refreshing");
    // Once the tenant's calls have shown they are quick, due records go to the filter on
    // the driver's thread instead of waking its worker.
    let tenants = rpc(admin, "filter.list", &[]);
    let due_inline = tenants["tenants"][0]["counters"]["registrations_due_inline"]
        .as_u64()
        .unwrap_or_default();
    assert!(
        due_inline > 0,
        "no due record ran on the driver's thread: {tenants}"
    );
    let counters = rpc(admin, "uac.reg_info", &["l_uuid", "t0000"]);
    assert_eq!(counters["last_status"], 200, "{counters}");
    assert!(
        counters.get("auth_password").is_none() && !counters.to_string().contains("pw-t-0"),
        "reg_info leaks the password: {counters}"
    );
    eprintln!("1,000 accounts registered in {registered_in:?}");
}

/// A registrar whose nonces expire before the refreshes come (nonce_expire 3 s, refreshes
/// at 6–9.6 s): each early answer is refused with `stale=true`, answered with the new
/// nonce, and accepted; no account fails or falls back to a first registration.
#[test]
fn refreshes_after_the_nonce_expired_are_answered_with_the_new_one() {
    const N: usize = 20;
    const EXPIRES: u32 = 12;
    let scratch = Scratch::new("reg-stale");
    let ports = PortBlock::reserve("registrations_registrar::stale", 3);
    let (sip, admin, registrar) = (ports.port(0), ports.port(1), ports.port(2));
    let accounts = accounts("s", N, EXPIRES);
    let kamailio = RegistrarCfg {
        nonce_expire: 3,
        ..RegistrarCfg::default()
    }
    .start(&scratch, registrar, &registrar_db(&scratch, &accounts));
    let db = uacreg_db(&scratch, &accounts, registrar);
    let _siphost = Siphost::start(&scratch, &siphost_config(sip, admin, &db, ""));
    wait_for("20 accounts online", Duration::from_secs(30), || {
        online(admin) == N
    });
    let first_wave = registers(&kamailio).len();
    wait_for("every account refreshed", Duration::from_secs(30), || {
        let mut per_user: HashMap<String, usize> = HashMap::new();
        for a in accepted(&kamailio) {
            *per_user.entry(a.user).or_default() += 1;
        }
        per_user.len() == N && per_user.values().all(|n| *n >= 2)
    });
    let seen = registers(&kamailio);
    let refreshes = &seen[first_wave..];
    let early = refreshes.iter().filter(|s| s.authorized).count();
    let ok = accepted(&kamailio).len() - N;
    assert!(ok >= N, "{ok} refreshes accepted");
    assert_eq!(
        refreshes.iter().filter(|s| !s.authorized).count(),
        0,
        "a refresh went out without an answer"
    );
    // Early answers were refused as stale (at least each account's first refresh), and
    // answered again.
    assert!(
        early >= ok + N,
        "{early} authorized REGISTERs for {ok} refreshes"
    );
    assert_eq!(online(admin), N);
    let info = rpc(admin, "uac.reg_info", &["l_uuid", "s0000"]);
    assert_eq!(info["last_status"], 200, "{info}");
}

/// Three times as many accounts as a tenant may have requests in flight all come due at
/// once, against a registrar slower than siphost hands them out (2.5 ms per REGISTER in
/// each of its 4 processes): the host gives the filter no more records than fit, so no
/// REGISTER is refused for want of room (a refused send counts as a failure and waits
/// `reg_retry_interval`).
#[test]
fn more_accounts_than_requests_in_flight_register_without_a_refused_send() {
    const N: usize = 3000;
    let scratch = Scratch::new("reg-in-flight");
    let ports = PortBlock::reserve("registrations_registrar::in_flight", 3);
    let (sip, admin, registrar) = (ports.port(0), ports.port(1), ports.port(2));
    let accounts = accounts("f", N, 600);
    let kamailio = RegistrarCfg {
        delay_us: 2500,
        ..RegistrarCfg::default()
    }
    .start(&scratch, registrar, &registrar_db(&scratch, &accounts));
    let db = uacreg_db(&scratch, &accounts, registrar);
    // T1 500 ms: a REGISTER waiting its turn at the registrar is not resent at once.
    let config = siphost_config(sip, admin, &db, "reg_retry_interval = 5")
        .replace("t1_ms = 100", "t1_ms = 500");
    let siphost = Siphost::start(&scratch, &config);
    wait_for("3,000 accounts online", Duration::from_secs(90), || {
        online(admin) == N
    });
    let log = std::fs::read_to_string(siphost.peer.log_path()).unwrap_or_default();
    assert!(
        !log.contains("requests in flight already") && !log.contains("REGISTER not sent"),
        "a REGISTER was refused: {}",
        siphost.peer.log_tail()
    );
    let users: std::collections::HashSet<String> = registers(&kamailio)
        .into_iter()
        .filter(|s| s.authorized)
        .map(|s| s.user)
        .collect();
    assert_eq!(users.len(), N);
}

/// A registrar with min_expires above the row's Expires answers 423; the
/// filter retries with Min-Expires and keeps it for later refreshes.
#[test]
fn interval_too_brief_is_retried_with_min_expires() {
    let scratch = Scratch::new("reg-423");
    let ports = PortBlock::reserve("registrations_registrar::423", 3);
    let (sip, admin, registrar) = (ports.port(0), ports.port(1), ports.port(2));
    let accounts = accounts("m", 3, 30);
    let _kamailio = RegistrarCfg {
        min_expires: 120,
        ..RegistrarCfg::default()
    }
    .start(&scratch, registrar, &registrar_db(&scratch, &accounts));
    let db = uacreg_db(&scratch, &accounts, registrar);
    let _siphost = Siphost::start(&scratch, &siphost_config(sip, admin, &db, ""));
    wait_for("3 accounts online", Duration::from_secs(15), || {
        online(admin) == 3
    });
    let info = rpc(admin, "uac.reg_info", &["l_uuid", "m0000"]);
    let remaining = info["timer_expires"].as_u64().unwrap_or(0).saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    );
    assert!(
        remaining > 100,
        "the binding should last Min-Expires (120 s), not the row's 30 s: {info}"
    );
}

/// A row's `socket` is the listener its REGISTERs leave from; a row without one uses
/// `default_socket`.
#[test]
fn a_rows_socket_or_default_socket_is_where_its_registers_leave_from() {
    let scratch = Scratch::new("reg-socket");
    let ports = PortBlock::reserve("registrations_registrar::socket", 5);
    let (sip, admin, registrar, row_socket, default_socket) = (
        ports.port(0),
        ports.port(1),
        ports.port(2),
        ports.port(3),
        ports.port(4),
    );
    let accounts = accounts("s", 2, 120);
    let kamailio = RegistrarCfg {
        min_expires: 60,
        ..RegistrarCfg::default()
    }
    .start(&scratch, registrar, &registrar_db(&scratch, &accounts));
    let db = uacreg_db(&scratch, &accounts, registrar);
    sqlite(
        &db,
        &format!(
            "UPDATE uacreg SET socket = 'udp:{LOOPBACK}:{row_socket}' WHERE l_uuid = 's0000';"
        ),
    );
    let mut config = siphost_config(
        sip,
        admin,
        &db,
        &format!("default_socket = \"udp:{LOOPBACK}:{default_socket}\""),
    );
    for port in [row_socket, default_socket] {
        config.push_str(&format!(
            "\n[[listen]]\ntransport = \"udp\"\naddress = \"{LOOPBACK}:{port}\"\n"
        ));
    }
    let _siphost = Siphost::start(&scratch, &config);
    wait_for("2 accounts online", Duration::from_secs(15), || {
        online(admin) == 2
    });
    let seen = registers(&kamailio);
    for (user, port) in [("s0000", row_socket), ("s0001", default_socket)] {
        let from: Vec<Option<u16>> = seen
            .iter()
            .filter(|s| s.user == user)
            .map(|s| s.source_port)
            .collect();
        assert!(!from.is_empty(), "{user} never registered");
        assert!(
            from.iter().all(|p| *p == Some(port)),
            "{user}'s REGISTERs came from {from:?}, not {port}"
        );
    }
}

/// A wrong password fails, and retries back off (1 s, 2 s, 4 s … with
/// jitter) instead of storming the registrar.
#[test]
fn wrong_password_backs_off() {
    let scratch = Scratch::new("reg-wrong-pw");
    let ports = PortBlock::reserve("registrations_registrar::wrong_pw", 4);
    let (sip, admin, registrar, watcher) =
        (ports.port(0), ports.port(1), ports.port(2), ports.port(3));
    // Each failed registration raises uac:reg-failed; its rule tells a watcher.
    let watch = std::net::UdpSocket::bind((LOOPBACK, watcher)).expect("watcher socket");
    watch
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut accounts = accounts("w", 2, 60);
    accounts[1].configured_password = "not-the-password".to_owned();
    let kamailio =
        RegistrarCfg::default().start(&scratch, registrar, &registrar_db(&scratch, &accounts));
    let db = uacreg_db(&scratch, &accounts, registrar);
    let on_failure = format!(
        r#"reg_retry_interval = 1

[[tenant.filter.config.rule]]
on = "event"
event = "uac:reg-failed"
do = [
    '$uac_req(method) = "MESSAGE"',
    '$uac_req(ruri) = "sip:watch@{LOOPBACK}:{watcher}"',
    '$uac_req(body) = "failed $event(l_uuid) $event(status)"',
    'uac_req_send()',
]
"#
    );
    let _siphost = Siphost::start(&scratch, &siphost_config(sip, admin, &db, &on_failure));
    let started = Instant::now();
    let mut alerts = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(8) {
        if let Ok(n) = watch.recv(&mut buf) {
            alerts.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let bad: Vec<Seen> = registers(&kamailio)
        .into_iter()
        .filter(|s| s.user == "w0001")
        .collect();
    // Attempts at about 0, 1–1.5, 3–4.5 and 7–10 s: each a challenge and one
    // authorized try. A storm would be hundreds.
    assert!(
        (4..=8).contains(&bad.len()),
        "{} REGISTERs for the wrong password in 8 s: {bad:?}",
        bad.len()
    );
    let info = rpc(admin, "uac.reg_info", &["l_uuid", "w0001"]);
    assert_eq!(info["last_status"], 401, "{info}");
    assert!(info["failures"].as_u64().unwrap_or(0) >= 2, "{info}");
    assert!(!info.to_string().contains("not-the-password"), "{info}");
    assert_eq!(online(admin), 1, "the good account registered");
    let scrape = metrics(admin);
    let counter = |name: &str| -> u64 {
        let prefix = format!("{name}{{tenant=\"default\"}} ");
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {scrape}")) as u64
    };
    let all_registers = registers(&kamailio).len() as u64;
    // The registrar may log the last few after the scrape, never fewer than were sent.
    let sent = counter("siphost_uac_register_sent_total");
    assert!(
        sent >= 4 && sent <= all_registers + 2,
        "register_sent {sent}, registrar saw {all_registers}"
    );
    assert!(
        counter("siphost_uac_register_failed_total") >= 2,
        "{scrape}"
    );
    let failed: Vec<&String> = alerts
        .iter()
        .filter(|m| m.starts_with("MESSAGE sip:watch@") && m.ends_with("failed w0001 401"))
        .collect();
    assert!(
        failed.len() >= 2,
        "one uac:reg-failed alert per failed attempt, got {alerts:?}"
    );
    assert!(
        alerts
            .iter()
            .all(|m| !m.contains("w0000") && !m.contains("not-the-password")),
        "only the failing account is reported, without its password: {alerts:?}"
    );
}

/// The registrar stops; refreshes fail and back off with jitter. When it
/// comes back every account recovers, paced by reg_max_per_second instead of
/// one synchronized burst (Kamailio sends every due record at the next tick).
#[test]
fn registrar_restart_recovers_without_a_burst() {
    const N: usize = 200;
    let scratch = Scratch::new("reg-restart");
    let ports = PortBlock::reserve("registrations_registrar::restart", 3);
    let (sip, admin, registrar) = (ports.port(0), ports.port(1), ports.port(2));
    let accounts = accounts("r", N, 10);
    let registrar_db = registrar_db(&scratch, &accounts);
    let mut kamailio = RegistrarCfg::default().start(&scratch, registrar, &registrar_db);
    let db = uacreg_db(&scratch, &accounts, registrar);
    let _siphost = Siphost::start(
        &scratch,
        // Timer F of 64 × 20 ms: few attempts are in flight when the registrar returns.
        &siphost_config(
            sip,
            admin,
            &db,
            "reg_retry_interval = 2\nreg_max_per_second = 25",
        )
        .replace("t1_ms = 100", "t1_ms = 20"),
    );
    wait_for("200 accounts online", Duration::from_secs(20), || {
        online(admin) == N
    });
    kamailio.peer.stop();
    // Bindings (10 s) run out while refreshes time out and retries back off.
    thread::sleep(Duration::from_secs(14));
    let kamailio = RegistrarCfg::default().start(&scratch, registrar, &registrar_db);
    let back = Instant::now();
    wait_for("recovery", Duration::from_secs(30), || online(admin) == N);
    let recovered_in = back.elapsed();
    let seen = registers(&kamailio);
    let total = seen.len();
    let busiest = busiest_second(&seen);
    eprintln!(
        "recovered {N} accounts in {recovered_in:?}: {total} REGISTERs, at most {busiest} in one second"
    );
    assert!(total >= 2 * N, "{total} REGISTERs after the restart");
    // New attempts start at most 25 a second; on top of them come the
    // retransmissions of the attempts in flight when the registrar returned
    // (at most 25/s × Timer F of 1.28 s). Not every account at once.
    let first_tries = seen.iter().filter(|s| !s.authorized).count();
    let busiest = busiest_second(
        &seen
            .iter()
            .filter(|s| !s.authorized)
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(
        busiest * 2 <= first_tries,
        "{busiest} of {first_tries} accounts came back in the same second"
    );
}

/// siphost killed with -9 the moment the last account came online, and
/// restarted; then a hot swap of the filter: still-valid bindings are not
/// registered again (SHA-256 digest here). The database is written once a
/// second, so this kill lands before it holds the last outcomes: they come
/// back from the live-state log.
#[test]
fn kill_9_and_filter_swap_register_nothing_again() {
    const N: usize = 100;
    let scratch = Scratch::new("reg-kill");
    let ports = PortBlock::reserve("registrations_registrar::kill9", 3);
    let (sip, admin, registrar) = (ports.port(0), ports.port(1), ports.port(2));
    let accounts = accounts("k", N, 120);
    let kamailio = RegistrarCfg {
        algorithm: "SHA-256",
        ..RegistrarCfg::default()
    }
    .start(&scratch, registrar, &registrar_db(&scratch, &accounts));
    let db = uacreg_db(&scratch, &accounts, registrar);
    let config = siphost_config(sip, admin, &db, "");
    let mut siphost = Siphost::start(&scratch, &config);
    // Polled closely: the kill must come well within the second before a write.
    let deadline = Instant::now() + Duration::from_secs(20);
    while online(admin) < N {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for 100 accounts online"
        );
        thread::sleep(Duration::from_millis(10));
    }
    kill_9(&mut siphost);
    // The registrar challenged with SHA-256 and the answers used it.
    let seen = registers(&kamailio);
    assert!(
        seen.iter()
            .filter(|s| s.authorized)
            .all(|s| s.algorithm.as_deref() == Some("SHA-256")),
        "an answer was not SHA-256"
    );
    // Refreshes are due at 60–96 s of the 120 s bindings: nothing is due now.
    let before = seen.len();
    let _siphost = Siphost::start(&scratch, &config);
    thread::sleep(Duration::from_secs(4));
    assert_eq!(online(admin), N, "the restart kept every binding");
    let scrape = metrics(admin);
    assert!(
        scrape.contains(&format!(
            "siphost_uac_registrations{{tenant=\"default\",state=\"online\"}} {N}"
        )),
        "{scrape}"
    );
    assert_eq!(
        registers(&kamailio).len(),
        before,
        "the restart after kill -9 sent REGISTERs for valid bindings"
    );
    let swapped = rpc(admin, "filter.reload", &["default"]);
    assert!(swapped.is_object(), "{swapped}");
    thread::sleep(Duration::from_secs(3));
    assert_eq!(online(admin), N, "the swap kept every binding");
    assert_eq!(
        registers(&kamailio).len(),
        before,
        "the filter swap sent REGISTERs"
    );
}

/// `examples/remote-registration.toml` as shipped (ports and paths moved):
/// accounts register with the provider, and a call the provider sends to an
/// account's contact reaches the local PBX addressed to the local user.
#[test]
fn remote_registration_example_registers_and_routes_calls_back() {
    use std::net::UdpSocket;
    let scratch = Scratch::new("reg-example");
    let ports = PortBlock::reserve("registrations_registrar::example", 4);
    let (sip, admin, registrar, pbx) = (ports.port(0), ports.port(1), ports.port(2), ports.port(3));
    let accounts = accounts("e", 2, 60);
    let _kamailio =
        RegistrarCfg::default().start(&scratch, registrar, &registrar_db(&scratch, &accounts));
    let db = uacreg_db(&scratch, &accounts, registrar);
    let example = common::tests_dir().join("../examples/remote-registration.toml");
    let text = std::fs::read_to_string(&example).expect("example");
    let mut config = text.clone();
    for (from, to) in [
        ("127.0.0.1:5060", format!("{LOOPBACK}:{sip}")),
        ("sip:127.0.0.1:5090", format!("sip:{LOOPBACK}:{pbx}")),
        ("\"pbx.local\"", "\"local.test\"".to_owned()),
        ("127.0.0.1:5081", format!("{LOOPBACK}:{admin}")),
        (
            "sqlite://target/siphost/remote-reg.db",
            format!("sqlite://{}", db.display()),
        ),
        (
            "target/wasm32-wasip2/wasm/uac_filter.wasm",
            uac_wasm().display().to_string(),
        ),
    ] {
        assert!(text.contains(from), "the example lost {from}");
        config = config.replace(from, &to);
    }
    let pbx_socket = UdpSocket::bind((LOOPBACK, pbx)).expect("pbx socket");
    pbx_socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _siphost = Siphost::start(&scratch, &config);
    wait_for("2 accounts online", Duration::from_secs(15), || {
        online(admin) == 2
    });
    // The provider calls the contact it holds for e0001: sip:e0001@siphost.
    let provider = UdpSocket::bind((LOOPBACK, 0)).expect("provider socket");
    let local = provider.local_addr().expect("addr").port();
    let invite = format!(
        "INVITE sip:e0001@{LOOPBACK}:{sip} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {LOOPBACK}:{local};branch=z9hG4bK-example-1\r\n\
         From: <sip:caller@{REALM}>;tag=p1\r\n\
         To: <sip:e0001@{LOOPBACK}:{sip}>\r\n\
         Call-ID: example-call-1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{LOOPBACK}:{local}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    provider
        .send_to(invite.as_bytes(), (LOOPBACK, sip))
        .expect("send INVITE");
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (n, _) = pbx_socket
            .recv_from(&mut buf)
            .expect("the PBX gets the call");
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.starts_with("INVITE ") {
            assert!(
                text.starts_with("INVITE sip:local-e0001@local.test SIP/2.0\r\n"),
                "the call reached the PBX as {}",
                text.lines().next().unwrap_or_default()
            );
            break;
        }
        assert!(Instant::now() < deadline, "no INVITE at the PBX");
    }
}
