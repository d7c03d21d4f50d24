//! The operator's door of a running `siphost`, over real sockets: `/metrics` scraped and
//! parsed after known traffic, the status page in headless chromium, and no secret in any output.
//!
//! Needs the noop test filter built first:
//! `cargo build --profile wasm --target wasm32-wasip2 -p filter-noop`,
//! and Debian's `chromium` for the status page test.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{LOOPBACK, PortBlock, Scratch, Siphost};
use serde_json::{Value, json};

const TOKEN: &str = "admin-token-7f3c9a1e55d2";
/// The password inside the filter config, and the HA1 (MD5 of `u:r:secretpass`).
const PASSWORD: &str = "secretpass";
const HA1: &str = "2364d6d08996e8b87990e76369437e7c";

/// `<target>/wasm32-wasip2/wasm/<name>.wasm`, or `$SIPHOST_FILTER_DIR/<name>.wasm`.
fn filter(name: &str) -> PathBuf {
    let dir = std::env::var_os("SIPHOST_FILTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test binary path");
            let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
            target.join("wasm32-wasip2").join("wasm")
        });
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} missing: build it first (cargo build --profile wasm --target wasm32-wasip2 -p filter-noop)",
        path.display()
    );
    path
}

/// A host with tenant `acme` (noop filter, a credential in its config) on `sip`,
/// forwarding to `next_hop`, admin on `admin` with the token.
fn host_config(ports: &PortBlock, log: &str) -> String {
    let (sip, next_hop, admin) = (ports.port(0), ports.port(1), ports.port(2));
    format!(
        r#"[log]
{log}

[[listen]]
transport = "udp"
address = "{LOOPBACK}:{sip}"

[transaction]
t1_ms = 100

[proxy]
record_route = true
default_route = "sip:{LOOPBACK}:{next_hop}"

[admin]
listen = "{LOOPBACK}:{admin}"
token = "{TOKEN}"

[[tenant]]
name = "acme"
listen = ["udp:{LOOPBACK}:{sip}"]

# The credential below needs identified endpoints: the test peers on loopback.
[tenant.access]
[[tenant.access.endpoint]]
name = "local"
source = ["127.0.0.1/32"]

[[tenant.filter]]
path = "{filter}"
config = {{ credential = ["u:r:{PASSWORD}"], auth_ha1 = "{HA1}" }}
"#,
        filter = filter("filter_noop").display()
    )
}

/// A UAS on `port`: 200 to OPTIONS, 486 to INVITE, ACKs absorbed. Stops on drop.
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Responder {
    fn start(port: u16) -> Responder {
        let socket = UdpSocket::bind((LOOPBACK, port)).expect("bind responder");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = match text.split(' ').next() {
                    Some("OPTIONS") => "200 OK",
                    Some("INVITE") => "486 Busy Here",
                    _ => continue,
                };
                let reply = reply_to(&text, status, ";tag=uas");
                let _ = socket.send_to(reply.as_bytes(), from);
            }
        });
        Responder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A reply to `request` copying Via, From, To (plus `to_tag`), Call-ID and CSeq.
fn reply_to(request: &str, status: &str, to_tag: &str) -> String {
    let mut reply = format!("SIP/2.0 {status}\r\n");
    for line in request.split("\r\n").skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => reply.push_str(&format!("{line}\r\n")),
            "to" => reply.push_str(&format!("{line}{to_tag}\r\n")),
            _ => {}
        }
    }
    reply.push_str("Content-Length: 0\r\n\r\n");
    reply
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// A UAC on loopback sending through the proxy at `proxy`.
struct Uac {
    socket: UdpSocket,
    proxy: u16,
    sent: u32,
}

impl Uac {
    fn new(proxy: u16) -> Uac {
        let socket = UdpSocket::bind((LOOPBACK, 0)).expect("bind uac");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Uac {
            socket,
            proxy,
            sent: 0,
        }
    }

    fn request(&self, method: &str, call: u32, cseq: u32, branch: &str, to_tag: &str) -> String {
        let local = self.socket.local_addr().expect("local").port();
        let proxy = self.proxy;
        format!(
            "{method} sip:bob@{LOOPBACK}:{proxy} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {LOOPBACK}:{local};branch=z9hG4bK-{branch}\r\n\
             From: <sip:alice@{LOOPBACK}>;tag=a{call}\r\n\
             To: <sip:bob@{LOOPBACK}>{to_tag}\r\n\
             Call-ID: admin-test-{call}-{local}\r\n\
             CSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    /// Sends one request and returns its final reply (skipping 1xx).
    fn transact(&mut self, method: &str) -> String {
        self.sent += 1;
        let call = self.sent;
        let branch = format!("{method}-{call}");
        let request = self.request(method, call, 1, &branch, "");
        self.socket
            .send_to(request.as_bytes(), (LOOPBACK, self.proxy))
            .expect("send");
        let mut buf = [0u8; 8192];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no final reply to {method} #{call}: {e}"));
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.starts_with("SIP/2.0 1") {
                continue;
            }
            if method == "INVITE" {
                // ACK for a non-2xx final reply: same branch, the reply's To tag.
                let to = header(&text, "To").unwrap_or_default();
                let tag = to.find(";tag=").map_or("", |i| &to[i..]);
                let ack = self.request("ACK", call, 1, &branch, tag);
                self.socket
                    .send_to(ack.as_bytes(), (LOOPBACK, self.proxy))
                    .expect("send ack");
            }
            return text;
        }
    }
}

/// One HTTP request to the admin listener; returns (status code, body).
fn http(admin: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect((LOOPBACK, admin)).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

fn rpc(admin: u16, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let (status, answer) = http(admin, "POST", "/RPC", Some(TOKEN), &body);
    assert_eq!(status, 200, "{method}: {answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json answer");
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// Every sample of a scrape by `name{label=value,...}` (labels sorted).
fn scrape(admin: u16) -> BTreeMap<String, f64> {
    let (status, text) = http(admin, "GET", "/metrics", Some(TOKEN), "");
    assert_eq!(status, 200, "{text}");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            assert!(
                rest.starts_with("siphost_"),
                "family not named siphost_: {line}"
            );
        }
    }
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus text parses");
    let mut out = BTreeMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    out
}

fn metric(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

/// Known traffic through tenant acme: OPTIONS answered 200, INVITEs answered 486.
const OPTIONS: u32 = 5;
const INVITES: u32 = 2;

fn send_traffic(proxy: u16) {
    let mut uac = Uac::new(proxy);
    for _ in 0..OPTIONS {
        let reply = uac.transact("OPTIONS");
        assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    }
    for _ in 0..INVITES {
        let reply = uac.transact("INVITE");
        assert!(reply.starts_with("SIP/2.0 486"), "{reply}");
    }
}

#[test]
fn metrics_scraped_over_http_count_the_traffic_sent() {
    let ports = PortBlock::reserve("admin-metrics", 3);
    let scratch = Scratch::new("admin-metrics");
    let _uas = Responder::start(ports.port(1));
    let _host = Siphost::start(&scratch, &host_config(&ports, "level = \"info\""));
    let admin = ports.port(2);
    let noop_sha = rpc(admin, "tenant.list", json!([]))[0]["filters"][0]["sha256"]
        .as_str()
        .expect("sha256")
        .to_string();

    send_traffic(ports.port(0));
    let swap = rpc(admin, "filter.reload", json!(["acme"]));
    assert_eq!(swap["sha256"], json!(noop_sha));

    let m = scrape(admin);
    let requests = f64::from(OPTIONS + INVITES);
    // ACKs for the 486s reach the proxy too (and stop there: hop-by-hop).
    let acks = f64::from(INVITES);
    assert_eq!(metric(&m, "siphost_sip_requests_total"), requests + acks);
    assert_eq!(metric(&m, "siphost_sip_replies_total"), requests);
    assert_eq!(metric(&m, "siphost_sip_malformed_total"), 0.0);
    assert_eq!(metric(&m, "siphost_calls_total"), f64::from(INVITES));
    let hook = |h: &str| format!("siphost_filter_hook_calls_total{{hook={h},tenant=acme}}");
    assert_eq!(metric(&m, &hook("request")), requests);
    assert_eq!(metric(&m, &hook("reply")), requests);
    assert_eq!(metric(&m, &hook("failure")), f64::from(INVITES));
    // The histogram counts every call it timed.
    let timed = "siphost_filter_hook_duration_seconds_count{hook=request,tenant=acme}";
    assert_eq!(metric(&m, timed), requests);
    // One filter in the chain: one filter call per hook call.
    assert_eq!(
        metric(&m, "siphost_filter_calls_total{tenant=acme}"),
        requests * 2.0 + f64::from(INVITES)
    );
    for kind in ["trap", "timeout", "out_of_memory", "instantiate"] {
        let key = format!("siphost_filter_failures_total{{kind={kind},tenant=acme}}");
        assert_eq!(metric(&m, &key), 0.0, "{kind}");
    }
    assert_eq!(
        metric(&m, "siphost_filter_swaps_total{outcome=ok,tenant=acme}"),
        1.0
    );
    assert_eq!(
        metric(&m, "siphost_filter_swaps_total{outcome=failed,tenant=acme}"),
        0.0
    );
    let info = format!("siphost_filter_info{{filter=0,sha256={noop_sha},tenant=acme}}");
    assert_eq!(metric(&m, &info), 1.0);
    assert_eq!(
        metric(&m, "siphost_uac_register_sent_total{tenant=acme}"),
        0.0
    );
    // No registration store runs: no registration family, no uac statistics.
    assert!(!m.keys().any(|k| k.starts_with("siphost_uac_registrations")));
    let stats = rpc(admin, "stats.get_statistics", json!(["all"]));
    assert!(!stats.to_string().contains("uac:"), "{stats}");
    assert!(
        stats
            .as_array()
            .expect("list")
            .contains(&json!(format!("core:rcv_requests = {}", requests + acks)))
    );

    // The RPC tells the same story as the scrape.
    let tenant = &rpc(admin, "tenant.list", json!([]))[0];
    assert_eq!(tenant["name"], json!("acme"));
    assert_eq!(tenant["requests"].as_f64(), Some(requests));
    assert_eq!(tenant["replies"].as_f64(), Some(requests));
    assert_eq!(tenant["swaps"], json!(1));
    let cli = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_siphost"))
            .args([
                "rpc",
                "--admin",
                &format!("{LOOPBACK}:{admin}"),
                "--token",
                TOKEN,
            ])
            .args(extra)
            .output()
            .expect("siphost rpc");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let as_json: Value =
        serde_json::from_str(&cli(&["--json", "tenant.list"])).expect("--json prints JSON");
    assert_eq!(&as_json[0]["requests"], &tenant["requests"]);
    let table = cli(&["tenant.list"]);
    let mut rows = table.lines();
    let head: Vec<&str> = rows.next().expect("header").split_whitespace().collect();
    let acme: Vec<&str> = rows.next().expect("row").split_whitespace().collect();
    assert_eq!(head[0], "name");
    assert_eq!(acme[0], "acme");
    let at = head
        .iter()
        .position(|c| *c == "requests")
        .expect("requests column");
    assert_eq!(acme[at], tenant["requests"].to_string(), "{table}");
}

/// Runs `chromium` headless on `url` and returns (dumped DOM, stderr).
fn chromium_dump(scratch: &Scratch, url: &str) -> (String, String) {
    let profile = scratch.path().join("chromium-profile");
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromium ({e}): the status page test needs Debian's chromium \
                 (apt-get install -y chromium, in scripts/setup.sh)"
            )
        });
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// The text of the element with `id` in a dumped DOM.
fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let start = at + dom[at..].find('>').expect("tag end") + 1;
    let end = start + dom[start..].find('<').expect("next tag");
    dom[start..end].to_string()
}

/// The value of attribute `name` of the element with `id` in a dumped DOM.
fn attribute(dom: &str, id: &str, name: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let tag = &dom[at..at + dom[at..].find('>').expect("tag end")];
    let marker = format!("{name}=\"");
    let start = tag
        .find(&marker)
        .unwrap_or_else(|| panic!("#{id} has no {name}: {tag}"))
        + marker.len();
    tag[start..start + tag[start..].find('"').expect("quote")].to_string()
}

/// The cell with `class` in the tenant row of `tenant`.
fn tenant_cell(dom: &str, tenant: &str, class: &str) -> String {
    let row_at = dom
        .find(&format!("data-tenant=\"{tenant}\""))
        .unwrap_or_else(|| panic!("no row for tenant {tenant}:\n{dom}"));
    let row = &dom[row_at..row_at + dom[row_at..].find("</tr>").expect("row end")];
    let marker = format!("class=\"num {class}\">");
    let at = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no {class} cell in {row}"))
        + marker.len();
    row[at..at + row[at..].find('<').expect("cell end")].to_string()
}

#[test]
fn status_page_in_headless_chromium_shows_what_the_rpc_reports() {
    let ports = PortBlock::reserve("admin-status", 3);
    let scratch = Scratch::new("admin-status");
    let _uas = Responder::start(ports.port(1));
    let _host = Siphost::start(&scratch, &host_config(&ports, "level = \"info\""));
    let admin = ports.port(2);
    send_traffic(ports.port(0));
    // The chart needs two samples of the totals (the host takes one every 2 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while rpc(admin, "status.get", json!([]))["rates"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "no rate samples");
        thread::sleep(Duration::from_millis(200));
    }

    let url = format!("http://{LOOPBACK}:{admin}/status#token={TOKEN}");
    let (dom, stderr) = chromium_dump(&scratch, &url);
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the page never rendered the RPC's answer:\n{dom}\n{stderr}"
    );
    assert_eq!(text_of(&dom, "error"), "", "the page reported an error");
    // Chromium logs every console message (console.error, uncaught exceptions) as a
    // CONSOLE line; the page logs nothing else.
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");

    let status = rpc(admin, "status.get", json!([]));
    assert_eq!(text_of(&dom, "calls"), status["calls"].to_string());
    assert_eq!(
        text_of(&dom, "registers"),
        status["registers_sent"].to_string()
    );
    assert_eq!(
        text_of(&dom, "sip-requests"),
        status["sip"]["requests"].to_string()
    );
    assert_eq!(
        text_of(&dom, "sip-replies"),
        status["sip"]["replies"].to_string()
    );
    assert_eq!(
        text_of(&dom, "version"),
        status["version"].as_str().expect("version")
    );
    let tenants = rpc(admin, "tenant.list", json!([]));
    let acme = &tenants[0];
    for key in ["requests", "replies", "filter_calls", "traps", "swaps"] {
        assert_eq!(
            tenant_cell(&dom, "acme", key),
            acme[key].to_string(),
            "{key}"
        );
    }
    assert_eq!(acme["requests"], json!(OPTIONS + INVITES));
    let sha = acme["filters"][0]["sha256"].as_str().expect("sha");
    assert!(
        dom.contains(&format!("data-sha256=\"{sha}\"")),
        "filter version not shown"
    );
    // The chart plots every rate point, both series, inside the 900x220 drawing.
    for series in ["line-calls", "line-registers"] {
        let points = attribute(&dom, series, "points");
        let xy: Vec<(f64, f64)> = points
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect();
        assert!(xy.len() >= 2, "{series}: {points:?}");
        assert!(
            xy.iter()
                .all(|&(x, y)| (0.0..=900.0).contains(&x) && (0.0..=220.0).contains(&y)),
            "{series}: {points:?}"
        );
    }
    // No registration store on this host: the counts show 0 and the table is empty.
    assert_eq!(text_of(&dom, "reg-online"), "0");
    assert!(
        dom.contains("<tbody></tbody>"),
        "registrations table not empty"
    );
    // Without the token the page's data calls are refused, and the page says so.
    // (This also shows the console check above sees the page's errors.)
    let (dom, stderr) = chromium_dump(&scratch, &format!("http://{LOOPBACK}:{admin}/status"));
    assert!(text_of(&dom, "error").contains("401"), "{dom}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(":CONSOLE") && l.contains("401")),
        "{stderr}"
    );
}

#[test]
fn no_secret_in_logs_rpc_metrics_or_page() {
    let ports = PortBlock::reserve("admin-secrets", 3);
    let scratch = Scratch::new("admin-secrets");
    let _uas = Responder::start(ports.port(1));
    // Everything logged, in both formats over two runs.
    for log in ["level = \"trace\"", "level = \"debug\"\nformat = \"json\""] {
        let mut host = Siphost::start(&scratch, &host_config(&ports, log));
        let admin = ports.port(2);
        send_traffic(ports.port(0));
        let mut outputs = Vec::new();
        let methods = rpc(admin, "system.listMethods", json!([]));
        for method in methods.as_array().expect("methods") {
            let name = method.as_str().expect("name");
            outputs.push(rpc(admin, "system.methodHelp", json!([name])).to_string());
            // uac.reg_* answer from a tenant's registrations (this host has none; they
            // are called in tests/registrations_registrar.rs).
            if !matches!(
                name,
                "filter.reload"
                    | "filter.restart"
                    | "filter.rpc"
                    | "system.methodHelp"
                    // Needs a tenant and fields; tests/uac_notify.rs calls it.
                    | "uac.req_send"
            ) && !name.starts_with("uac.reg_")
            {
                outputs.push(rpc(admin, name, json!([])).to_string());
            }
        }
        outputs.push(rpc(admin, "filter.rpc", json!(["acme", "dump"])).to_string());
        outputs.push(rpc(admin, "filter.restart", json!(["acme"])).to_string());
        outputs.push(rpc(admin, "filter.reload", json!(["acme"])).to_string());
        // A refused call is logged nowhere with the token it carried.
        let (status, refused) = http(admin, "POST", "/RPC", Some("wrong-token-0000000000"), "{}");
        assert_eq!(status, 401);
        outputs.push(refused);
        outputs.push(http(admin, "GET", "/metrics", Some(TOKEN), "").1);
        outputs.push(http(admin, "GET", "/status", None, "").1);
        let cli = Command::new(env!("CARGO_BIN_EXE_siphost"))
            .args([
                "rpc",
                "--admin",
                &format!("{LOOPBACK}:{admin}"),
                "tenant.list",
            ])
            .env("SIPHOST_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("siphost rpc");
        assert!(
            cli.status.success(),
            "{}",
            String::from_utf8_lossy(&cli.stderr)
        );
        let table = String::from_utf8_lossy(&cli.stdout).to_string();
        assert!(table.contains("acme"), "{table}");
        outputs.push(table);
        outputs.push(String::from_utf8_lossy(&cli.stderr).to_string());
        host.peer.stop();
        let host_log = std::fs::read_to_string(host.peer.log_path()).expect("log");
        assert!(host_log.contains("siphost ready"), "{host_log}");
        outputs.push(host_log);
        for (i, output) in outputs.iter().enumerate() {
            for secret in [PASSWORD, HA1, TOKEN] {
                assert!(
                    !output.contains(secret),
                    "{secret:?} leaked in output #{i} ({log}):\n{output}"
                );
            }
        }
    }
}

#[test]
fn log_lines_in_json_with_a_level_per_module() {
    let ports = PortBlock::reserve("admin-logs", 3);
    let scratch = Scratch::new("admin-logs");
    // info overall, but the admin module only from warn on: its start line disappears.
    let log = "level = \"info\"\nformat = \"json\"\n[log.targets]\n\"siphost::admin\" = \"warn\"";
    let mut host = Siphost::start(&scratch, &host_config(&ports, log));
    rpc(ports.port(2), "core.version", json!([]));
    host.peer.stop();
    let text = std::fs::read_to_string(host.peer.log_path()).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().expect("message field"))
        .collect();
    assert!(messages.contains(&"siphost ready"), "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["target"].is_string())
    );
    assert!(
        !lines.iter().any(|l| l["target"] == json!("siphost::admin")),
        "siphost::admin logged below warn:\n{text}"
    );
    // The same config at info for everything shows the admin line.
    let log = "level = \"info\"\nformat = \"json\"";
    let mut host = Siphost::start(&scratch, &host_config(&ports, log));
    host.peer.stop();
    let text = std::fs::read_to_string(host.peer.log_path()).expect("log");
    assert!(text.contains("\"target\":\"siphost::admin\""), "{text}");
}
