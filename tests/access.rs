//! Who may send through siphost, end to end: SIPp callers with digest credentials (MD5)
//! against a real siphost (from the config and from an SQLite table), a caller from an
//! unidentified loopback address, an INVITE flood from one while an identified endpoint's
//! calls keep completing, `$endpoint` in the uac filter's rules, the access counters in
//! `/metrics`, and `siphost check` refusing a trunk nobody is identified for.

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use md5::{Digest, Md5};

use common::{
    HeaderChecks, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport, record_route_regex,
    render, sip_uri, siphost_proxy_config, wasm_filter,
};

const SIPP_TIMEOUT: Duration = Duration::from_secs(60);

/// siphost on `port` forwarding to the callee, with tenant "trunk" owning the socket and
/// the given `[tenant.access]` body.
fn config(port: u16, callee: u16, access: &str) -> String {
    let mut text = siphost_proxy_config(port, &sip_uri(callee, Transport::Udp), 500);
    text.push_str(&format!(
        r#"
[[tenant]]
name = "trunk"
listen = ["udp:127.0.0.1:{port}"]

[tenant.access]
realm = "trunk.test"
{access}
"#
    ));
    text
}

/// Endpoint "alice", identified by her digest username from any source.
const ALICE: &str = r#"
[[tenant.access.endpoint]]
name = "alice"
username = "alice"
password = "wonderland"
"#;

/// The callee; its INVITEs must arrive without our realm's credentials.
fn callee(scratch: &Scratch, test: &str, calls: u32, proxy: u16) -> Sipp {
    callee_checking(scratch, test, calls, proxy, |checks| checks)
}

/// The callee, with more checks on each INVITE.
fn callee_checking(
    scratch: &Scratch,
    test: &str,
    calls: u32,
    proxy: u16,
    more: impl FnOnce(HeaderChecks) -> HeaderChecks,
) -> Sipp {
    let checks = more(
        HeaderChecks::new("invite")
            .matches("Record-Route", 1, &record_route_regex(proxy))
            .absent("Proxy-Authorization", 1),
    );
    let xml = render(
        "sipp/uas_call.xml",
        &[
            ("INVITE_CHECKS", checks.xml()),
            ("INVITE_RECORD_ROUTES", checks.resend_lines("Record-Route")),
        ],
    );
    Sipp::start(
        scratch,
        SippRole {
            name: "callee",
            scenario: scratch.write("callee.xml", &xml),
            transport: Transport::Udp,
            ports: PortBlock::reserve(&format!("{test}-callee"), 5),
            remote: None,
            calls,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn caller(
    scratch: &Scratch,
    name: &'static str,
    scenario: &str,
    proxy: u16,
    calls: u32,
    rate: u32,
    source: &str,
    extra: &[&str],
) -> Sipp {
    let vars = if scenario == "uac_call.xml" {
        vec![("FINAL_CHECKS", HeaderChecks::new("final").xml())]
    } else {
        Vec::new()
    };
    let xml = render(&format!("sipp/{scenario}"), &vars);
    start_caller(scratch, name, xml, proxy, calls, rate, source, extra)
}

#[allow(clippy::too_many_arguments)]
fn start_caller(
    scratch: &Scratch,
    name: &'static str,
    xml: String,
    proxy: u16,
    calls: u32,
    rate: u32,
    source: &str,
    extra: &[&str],
) -> Sipp {
    Sipp::start_from(
        scratch,
        SippRole {
            name,
            scenario: scratch.write(&format!("{name}.xml"), &xml),
            transport: Transport::Udp,
            ports: PortBlock::reserve(&format!("{}-{name}", scratch.path().display()), 5),
            remote: Some(proxy),
            calls,
            rate: Some(rate),
            timeout: SIPP_TIMEOUT,
        },
        source,
        extra,
    )
}

#[test]
fn right_password_completes_and_wrong_password_is_challenged_again() {
    let test = "access_right_wrong";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let proxy = ports.port(0);
    const CALLS: u32 = 5;
    let mut callee = callee(&scratch, test, CALLS, proxy);
    let _siphost = Siphost::start(&scratch, &config(proxy, callee.port, ALICE));

    let mut right = caller(
        &scratch,
        "right",
        "auth_uac_call.xml",
        proxy,
        CALLS,
        10,
        "127.0.0.4",
        &["-au", "alice", "-ap", "wonderland"],
    );
    right.assert_all_calls_succeeded();

    callee.assert_all_calls_succeeded();

    let mut wrong = caller(
        &scratch,
        "wrong",
        "auth_uac_wrong.xml",
        proxy,
        3,
        10,
        "127.0.0.4",
        &["-au", "alice", "-ap", "queenofhearts"],
    );
    wrong.assert_all_calls_succeeded();
}

#[test]
fn an_expired_nonce_gets_stale_true_and_then_the_call_completes() {
    let test = "access_stale";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let proxy = ports.port(0);
    let mut callee = callee(&scratch, test, 1, proxy);
    let access = format!("nonce_expire = 1\n{ALICE}");
    let _siphost = Siphost::start(&scratch, &config(proxy, callee.port, &access));
    let mut stale = caller(
        &scratch,
        "stale",
        "auth_uac_stale.xml",
        proxy,
        1,
        1,
        "127.0.0.4",
        &["-au", "alice", "-ap", "wonderland"],
    );
    stale.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    assert!(
        stale.action_log().contains("stale challenge: stale=true"),
        "{}",
        stale.action_log()
    );
}

const LOCAL_PBX: &str = r#"
[tenant.access.rate_limit]
rate = 5.0
burst = 10

[[tenant.access.endpoint]]
name = "pbx"
source = ["127.0.0.1/32"]
"#;

#[test]
fn a_request_from_another_loopback_address_gets_403() {
    let test = "access_403";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 2);
    let proxy = ports.port(0);
    // Nothing listens there: no request may get through.
    let _siphost = Siphost::start(&scratch, &config(proxy, ports.port(1), LOCAL_PBX));
    let mut stranger = caller(
        &scratch,
        "stranger",
        "uac_forbidden.xml",
        proxy,
        3,
        10,
        "127.0.0.2",
        &[],
    );
    stranger.assert_all_calls_succeeded();
}

#[test]
fn a_flood_from_an_unidentified_source_does_not_stop_real_calls() {
    let test = "access_flood";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let proxy = ports.port(0);
    const CALLS: u32 = 30;
    const FLOOD: u32 = 3000;
    let mut callee = callee(&scratch, test, CALLS, proxy);
    let siphost = Siphost::start(&scratch, &config(proxy, callee.port, LOCAL_PBX));
    let mut flood = caller(
        &scratch,
        "flood",
        "flood_invite.xml",
        proxy,
        FLOOD,
        1000,
        "127.0.0.3",
        &[],
    );
    let mut pbx = caller(
        &scratch,
        "pbx",
        "uac_call.xml",
        proxy,
        CALLS,
        10,
        "127.0.0.1",
        &[],
    );
    pbx.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    flood.peer.wait_exit(SIPP_TIMEOUT);
    // Each refusal is logged; once the scanner's bucket is dry it costs nothing more.
    let log = std::fs::read_to_string(siphost.peer.log_path()).expect("siphost log");
    let refused = log.matches("request from an unidentified source").count();
    assert!(
        (1..=200).contains(&refused),
        "expected between 1 and 200 refusals of {FLOOD} flood requests, got {refused}"
    );
}

/// Sends an INVITE from `source` over UDP, with `extra` header lines (CRLF-terminated),
/// and returns the reply.
fn send_invite(proxy: u16, source: &str, cseq: u32, extra: &str) -> String {
    let socket = UdpSocket::bind((source, 0)).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    let invite = format!(
        "INVITE sip:service@127.0.0.1:{proxy} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-fetch{cseq}\r\n\
         From: <sip:fetch@{source}>;tag=fetch\r\n\
         To: <sip:service@127.0.0.1:{proxy}>\r\n\
         Call-ID: fetch-challenge\r\n\
         CSeq: {cseq} INVITE\r\n\
         Max-Forwards: 70\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    socket
        .send_to(invite.as_bytes(), ("127.0.0.1", proxy))
        .expect("send");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a reply");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sends an INVITE from `source` over UDP and returns the Proxy-Authenticate value of the
/// 407 it gets.
fn fetch_challenge(proxy: u16, source: &str) -> String {
    let reply = send_invite(proxy, source, 1, "");
    assert!(reply.starts_with("SIP/2.0 407 "), "{reply}");
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Proxy-Authenticate: "))
        .unwrap_or_else(|| panic!("no challenge in {reply}"))
        .to_owned()
}

fn param(challenge: &str, name: &str) -> String {
    let start = challenge.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
    let len = challenge[start..].find('"').expect("closing quote");
    challenge[start..start + len].to_owned()
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// MD5, qop=auth credentials answering `challenge` for an INVITE to `uri`, nc=00000001.
fn credentials(challenge: &str, user: &str, password: &str, uri: &str) -> String {
    let (realm, nonce, opaque) = (
        param(challenge, "realm"),
        param(challenge, "nonce"),
        param(challenge, "opaque"),
    );
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("INVITE:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, cnonce=\"0a4f113b\", nc=00000001, qop=auth, \
         opaque=\"{opaque}\""
    )
}

#[test]
fn credentials_sent_again_with_the_same_nonce_count_are_refused() {
    let test = "access_replay";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let proxy = ports.port(0);
    let mut callee = callee(&scratch, test, 1, proxy);
    let _siphost = Siphost::start(&scratch, &config(proxy, callee.port, ALICE));
    let challenge = fetch_challenge(proxy, "127.0.0.4");
    let creds = credentials(
        &challenge,
        "alice",
        "wonderland",
        &format!("sip:service@127.0.0.1:{proxy}"),
    );
    let given = |scenario: &str| {
        render(
            &format!("sipp/{scenario}"),
            &[("CREDENTIALS", creds.clone())],
        )
    };
    let mut first = start_caller(
        &scratch,
        "first",
        given("auth_uac_given_call.xml"),
        proxy,
        1,
        1,
        "127.0.0.4",
        &[],
    );
    first.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    let mut again = start_caller(
        &scratch,
        "again",
        given("auth_uac_given_replay.xml"),
        proxy,
        1,
        1,
        "127.0.0.4",
        &[],
    );
    again.assert_all_calls_succeeded();
}

/// The uac filter in tenant "trunk"'s chain: endpoint "office" is refused by a rule, every
/// other request gets `X-Endpoint: $endpoint`.
fn endpoint_rules() -> String {
    format!(
        r#"
[[tenant.filter]]
path = "{}"

[[tenant.filter.config.rule]]
on = "request"
when = '$endpoint == "office"'
do = ['sl_send_reply(403, "Endpoint $endpoint refused")']

[[tenant.filter.config.rule]]
on = "request"
do = ['append_hf("X-Endpoint: $endpoint\r\n")']
"#,
        wasm_filter("uac_filter").display()
    )
}

#[test]
fn rules_see_the_identified_endpoint_and_refuse_one() {
    let test = "access_endpoint_rules";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let proxy = ports.port(0);
    const CALLS: u32 = 3;
    let mut callee = callee_checking(&scratch, test, CALLS, proxy, |c| {
        c.matches("X-Endpoint", 1, "^ *pbx$")
    });
    let access = r#"
[[tenant.access.endpoint]]
name = "pbx"
source = ["127.0.0.1/32"]

[[tenant.access.endpoint]]
name = "office"
source = ["127.0.0.5/32"]
"#;
    let text = format!("{}{}", config(proxy, callee.port, access), endpoint_rules());
    let _siphost = Siphost::start(&scratch, &text);
    let mut pbx = caller(
        &scratch,
        "pbx",
        "uac_call.xml",
        proxy,
        CALLS,
        10,
        "127.0.0.1",
        &[],
    );
    pbx.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    // Identified (access lets it through), then refused by the rule on its name.
    let mut office = caller(
        &scratch,
        "office",
        "uac_refused_by_rule.xml",
        proxy,
        2,
        10,
        "127.0.0.5",
        &[],
    );
    office.assert_all_calls_succeeded();
}

/// (username, password, ha1, endpoint).
type CredentialRow<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Creates table `table` in the SQLite file at `path` with these (username, password, ha1,
/// endpoint) rows, as an operator would.
fn sqlite_credentials(path: &Path, table: &str, rows: &[CredentialRow<'_>]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("sqlite");
        sqlx::query(&format!(
            "CREATE TABLE {table} (username VARCHAR(64) NOT NULL, password VARCHAR(64), \
             ha1 VARCHAR(64), ha1_sha256 VARCHAR(64), endpoint VARCHAR(64))"
        ))
        .execute(&pool)
        .await
        .expect("create");
        for (username, password, ha1, endpoint) in rows {
            sqlx::query(&format!(
                "INSERT INTO {table} (username, password, ha1, endpoint) VALUES (?, ?, ?, ?)"
            ))
            .bind(*username)
            .bind(*password)
            .bind(*ha1)
            .bind(*endpoint)
            .execute(&pool)
            .await
            .expect("insert");
        }
        pool.close().await;
    });
}

fn scrape(admin: u16) -> BTreeMap<String, f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", admin)).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus text parses");
    parsed
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            Some((format!("{}{{{}}}", sample.metric, labels.join(",")), value))
        })
        .collect()
}

/// Credentials from an SQLite table of the tenant's store: the right password completes
/// (the row's `endpoint` column reaches the rules), a wrong one is challenged again, an
/// unknown username is refused; `/metrics` counts each of them.
#[test]
fn digest_credentials_from_a_sqlite_table_and_access_counters_in_metrics() {
    let test = "access_sqlite_metrics";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 2);
    let (proxy, admin) = (ports.port(0), ports.port(1));
    let db = scratch.path().join("store.db");
    sqlite_credentials(
        &db,
        "endpoint_credentials",
        &[
            ("alice", Some("wonderland"), None, Some("alice-db")),
            ("bob", None, Some(&md5_hex("bob:trunk.test:builder")), None),
        ],
    );
    let mut callee = callee_checking(&scratch, test, 1, proxy, |c| {
        c.matches("X-Endpoint", 1, "^ *alice-db$")
    });
    let access = format!(
        "[tenant.access.credentials]\ntable = \"endpoint_credentials\"\ndb_url = \"sqlite://{}\"\n",
        db.display()
    );
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n{}{}",
        config(proxy, callee.port, &access),
        endpoint_rules()
    );
    let _siphost = Siphost::start(&scratch, &text);

    let mut right = caller(
        &scratch,
        "right",
        "auth_uac_call.xml",
        proxy,
        1,
        1,
        "127.0.0.4",
        &["-au", "alice", "-ap", "wonderland"],
    );
    right.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    let mut wrong = caller(
        &scratch,
        "wrong",
        "auth_uac_wrong.xml",
        proxy,
        1,
        1,
        "127.0.0.4",
        &["-au", "alice", "-ap", "queenofhearts"],
    );
    wrong.assert_all_calls_succeeded();
    // Credentials for a username no row has: unidentified, 403.
    let challenge = fetch_challenge(proxy, "127.0.0.6");
    let uri = format!("sip:service@127.0.0.1:{proxy}");
    let authorization = credentials(&challenge, "mallory", "x", &uri);
    let reply = send_invite(
        proxy,
        "127.0.0.6",
        2,
        &format!("Proxy-Authorization: {authorization}\r\n"),
    );
    assert!(reply.starts_with("SIP/2.0 403 "), "{reply}");

    let m = scrape(admin);
    let get = |key: &str| {
        *m.get(key)
            .unwrap_or_else(|| panic!("no sample {key} in {m:#?}"))
    };
    let outcome = |o: &str| {
        get(&format!(
            "siphost_access_requests_total{{outcome={o},tenant=trunk}}"
        ))
    };
    let event = |e: &str| {
        get(&format!(
            "siphost_access_events_total{{event={e},tenant=trunk}}"
        ))
    };
    // right: INVITE challenged, its ACK absorbed, INVITE, ACK and BYE allowed;
    // wrong: INVITE challenged twice (the second with wrong credentials), two ACKs absorbed;
    // mallory: challenged, then refused.
    assert_eq!(outcome("allowed"), 3.0);
    assert_eq!(outcome("challenged"), 4.0);
    assert_eq!(outcome("dropped"), 3.0);
    assert_eq!(outcome("refused"), 1.0);
    assert_eq!(event("auth_failed"), 1.0);
    assert_eq!(event("unidentified"), 1.0);
    assert_eq!(event("stale"), 0.0);
    assert_eq!(event("replayed"), 0.0);
    assert_eq!(event("rate_limited"), 0.0);
}

/// A credentials table that is not there stops the start with a message naming it.
#[test]
fn a_missing_credentials_table_stops_the_start_with_a_clear_error() {
    let test = "access_missing_table";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let db = scratch.path().join("empty.db");
    sqlite_credentials(&db, "other_table", &[]);
    let access = format!(
        "[tenant.access.credentials]\ntable = \"no_such_table\"\ndb_url = \"sqlite://{}\"\n",
        db.display()
    );
    let path = scratch.write("siphost.toml", &config(ports.port(0), 9, &access));
    let out = Command::new(env!("CARGO_BIN_EXE_siphost"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("siphost runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tenant \"trunk\": access.credentials.table \"no_such_table\" with columns (username, password, ha1, ha1_sha256, endpoint) cannot be read"),
        "{stderr}"
    );
}

/// `siphost check` refuses a tenant whose filters hold trunk credentials (`credential`)
/// or that registers accounts (`[tenant.registrations]`) and that identifies nobody.
#[test]
fn check_refuses_trunk_credentials_without_identification() {
    let test = "access_check";
    let scratch = Scratch::new(test);
    let check = |name: &str, tenant: &str| {
        let text = format!(
            "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\n\
             [[tenant]]\nname = \"acme\"\nlisten = [\"udp:127.0.0.1:5060\"]\n{tenant}"
        );
        let path = scratch.write(name, &text);
        let out = Command::new(env!("CARGO_BIN_EXE_siphost"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("siphost check runs");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let filter = format!(
        "[[tenant.filter]]\npath = \"{}\"\n[tenant.filter.config]\ncredential = [\"u:r:p\"]\n",
        wasm_filter("uac_filter").display()
    );
    let (code, out) = check("filter.toml", &filter);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("config error: tenant[0].access.endpoint: tenant \"acme\" holds trunk credentials (filter[0].config.credential) but identifies no endpoint"),
        "{out}"
    );
    let registrations =
        "[tenant.registrations]\ndb_url = \"sqlite:///tmp/siphost-check-unused.db\"\n";
    let (code, out) = check("registrations.toml", registrations);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("holds trunk credentials (registrations)"),
        "{out}"
    );
    let identified = format!(
        "{filter}[[tenant.access.endpoint]]\nname = \"pbx\"\nsource = [\"127.0.0.1/32\"]\n"
    );
    let (code, out) = check("identified.toml", &identified);
    assert_eq!((code, out.trim()), (Some(0), "config ok"));
    let by_table =
        format!("{filter}[tenant.access.credentials]\ntable = \"endpoint_credentials\"\n");
    let (code, out) = check("table-without-db.toml", &by_table);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("access.credentials.db_url: not set, and the tenant has no [tenant.registrations] db_url to share"),
        "{out}"
    );
}

/// The databases a credentials table is read from: SQLite (a file of the scratch dir),
/// PostgreSQL and MariaDB (the servers the brief names, overridable with
/// SIPHOST_TEST_POSTGRES_URL / SIPHOST_TEST_MYSQL_URL).
fn database_urls(scratch: &Scratch) -> [(&'static str, String); 3] {
    [
        (
            "sqlite",
            format!(
                "sqlite://{}",
                scratch.path().join("credentials.db").display()
            ),
        ),
        (
            "postgres",
            std::env::var("SIPHOST_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
        ),
        (
            "mysql",
            std::env::var("SIPHOST_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned()),
        ),
    ]
}

/// Rows as an operator writes them: good ones (a password, an HA1, an endpoint name or
/// none) and broken ones, which are skipped without hiding the good ones.
#[tokio::test]
async fn credentials_tables_on_sqlite_postgres_and_mariadb() {
    use siphost::access::Secret;
    use siphost::access::table::{CredentialTable, TableError};
    let scratch = Scratch::new("access_credentials_tables");
    sqlx::any::install_default_drivers();
    for (kind, url) in database_urls(&scratch) {
        let table = format!("endpoint_creds_{}", std::process::id());
        let raw_url = match kind {
            "sqlite" => format!("{url}?mode=rwc"),
            _ => url.clone(),
        };
        let raw = sqlx::AnyPool::connect(&raw_url)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let exec = |sql: String| {
            let raw = raw.clone();
            async move {
                sqlx::query(&sql)
                    .execute(&raw)
                    .await
                    .unwrap_or_else(|e| panic!("{kind}: {sql}: {e}"));
            }
        };
        exec(format!("DROP TABLE IF EXISTS {table}")).await;
        match CredentialTable::open(&url, &table).await {
            Err(e @ TableError::MissingTable { .. }) => {
                assert!(
                    e.to_string()
                        .contains(&format!("table {table:?} with columns")),
                    "{kind}: {e}"
                )
            }
            other => panic!("{kind}: a missing table must be an error, got {other:?}"),
        }
        exec(format!(
            "CREATE TABLE {table} (username VARCHAR(64) NOT NULL, password VARCHAR(64), \
             ha1 VARCHAR(64), ha1_sha256 VARCHAR(64), endpoint VARCHAR(64))"
        ))
        .await;
        let sha = "a".repeat(64);
        for values in [
            "'alice', 'wonderland', NULL, NULL, 'alice-pbx'".to_owned(),
            format!(
                "'bob', NULL, '{}', '{sha}', NULL",
                md5_hex("bob:trunk.test:builder")
            ),
            "'carol', 'pw', '0123456789abcdef0123456789abcdef', NULL, NULL".to_owned(),
            "'dave', NULL, NULL, NULL, 'dave-pbx'".to_owned(),
            "'erin', NULL, 'not-hex', NULL, NULL".to_owned(),
            "'alice', 'again', NULL, NULL, NULL".to_owned(),
            "'', 'pw', NULL, NULL, NULL".to_owned(),
        ] {
            exec(format!(
                "INSERT INTO {table} (username, password, ha1, ha1_sha256, endpoint) VALUES ({values})"
            ))
            .await;
        }
        let store = CredentialTable::open(&url, &table)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let (rows, skipped) = store.load().await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        let mut names: Vec<&str> = rows.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["alice", "bob"], "{kind}");
        assert_eq!(&*rows["alice"].endpoint, "alice-pbx", "{kind}");
        assert_eq!(
            rows["alice"].secret,
            Secret::Password("wonderland".into()),
            "{kind}"
        );
        assert_eq!(
            &*rows["bob"].endpoint, "bob",
            "{kind}: no endpoint column → username"
        );
        assert_eq!(
            rows["bob"].secret,
            Secret::Ha1 {
                md5: Some(md5_hex("bob:trunk.test:builder")),
                sha256: Some(sha.clone())
            },
            "{kind}"
        );
        let mut why: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        why.sort();
        assert_eq!(
            why,
            [
                "credentials row username=\"\" skipped: empty username",
                "credentials row username=\"alice\" skipped: username given again",
                "credentials row username=\"carol\" skipped: both a password and an HA1",
                "credentials row username=\"dave\" skipped: no password, ha1 or ha1_sha256",
                "credentials row username=\"erin\" skipped: ha1 is not 32 hex digits",
            ],
            "{kind}"
        );
        exec(format!("DROP TABLE {table}")).await;
        raw.close().await;
    }
}
