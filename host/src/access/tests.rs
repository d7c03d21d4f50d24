//! Access decisions with a fixed secret and fixed times.

use super::*;
use siphost_sip::Bytes;

const SECRET: [u8; 32] = [7; 32];
const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn from_ip(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), 5060)
}

fn control(text: &str) -> AccessControl {
    let config: AccessConfig = toml::from_str(text).expect("access config");
    AccessControl::new("acme", &config, SECRET).expect("valid config")
}

const CONFIG: &str = r#"
realm = "acme.test"
nonce_expire = 30
[rate_limit]
rate = 1.0
burst = 3
[[endpoint]]
name = "pbx"
source = ["10.0.0.0/24", "2001:db8::/64"]
[[endpoint]]
name = "phone"
from = ["alice@Example.com"]
[[endpoint]]
name = "branch"
source = ["10.0.1.5"]
username = "branch"
password = "s3cret"
auth = true
[[endpoint]]
name = "roamer"
username = "roamer"
ha1 = "398FB8A6B0B1D6CEEFFE35C6E4A0E948"
"#;

fn request(method: &str, from: &str, extra: &str) -> Message {
    let text = format!(
        "{method} sip:bob@carrier.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK1\r\n\
         From: <sip:{from}>;tag=f1\r\n\
         To: <sip:bob@carrier.test>\r\n\
         Call-ID: c1@test\r\n\
         CSeq: 1 {method}\r\n\
         Max-Forwards: 70\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).expect("test request parses")
}

fn invite(from: &str) -> Message {
    request("INVITE", from, "")
}

fn challenge_of(verdict: Verdict) -> Message {
    match verdict {
        Verdict::Challenge(reply) => *reply,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn param(header: &str, name: &str) -> Option<String> {
    let start = header.find(&format!("{name}="))? + name.len() + 1;
    let rest = header[start..].trim_start_matches('"');
    Some(rest[..rest.find(['"', ',']).unwrap_or(rest.len())].to_owned())
}

/// An Authorization value answering `challenge` as a client would.
fn answer(challenge: &str, username: &str, password: &str, nc: u32, method: &str) -> String {
    let nonce = param(challenge, "nonce").expect("nonce");
    let realm = param(challenge, "realm").expect("realm");
    let opaque = param(challenge, "opaque").expect("opaque");
    let algorithm =
        Algorithm::from_name(&param(challenge, "algorithm").expect("alg")).expect("alg");
    let uri = "sip:bob@carrier.test";
    let nc = format!("{nc:08x}");
    let ha1 = digest::ha1(algorithm, username, &realm, password);
    let response = digest::response_qop_auth(algorithm, &ha1, &nonce, &nc, "abcdef", method, uri);
    format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"abcdef\", opaque=\"{opaque}\"",
        algorithm.name()
    )
}

fn allowed(verdict: Verdict) -> Option<Endpoint> {
    match verdict {
        Verdict::Allow(endpoint) => endpoint,
        other => panic!("expected allow, got {other:?}"),
    }
}

#[test]
fn identifies_by_source_network_then_from() {
    let mut access = control(CONFIG);
    let pbx = allowed(access.check(
        &invite("x@y"),
        from_ip("10.0.0.77"),
        Target::Relayed,
        at(T0),
    ));
    assert_eq!(
        pbx.map(|e| (e.name.to_string(), e.by)),
        Some(("pbx".into(), IdentifiedBy::Source))
    );
    let v6 = allowed(access.check(
        &invite("x@y"),
        from_ip("2001:db8::9"),
        Target::Relayed,
        at(T0),
    ));
    assert_eq!(v6.map(|e| e.name.to_string()), Some("pbx".into()));
    let phone = allowed(access.check(
        &invite("alice@example.COM"),
        from_ip("192.0.2.1"),
        Target::Relayed,
        at(T0),
    ));
    assert_eq!(
        phone.map(|e| (e.name.to_string(), e.by)),
        Some(("phone".into(), IdentifiedBy::From))
    );
}

#[test]
fn unidentified_gets_403_or_nothing() {
    // No endpoint has a username, so strangers are not challenged.
    let config = "[[endpoint]]\nname = \"pbx\"\nsource = [\"10.0.0.0/24\"]\n\
                  [[endpoint]]\nname = \"phone\"\nfrom = [\"alice@example.com\"]\n";
    let mut access = control(config);
    // From user is case-sensitive.
    match access.check(
        &invite("Alice@example.com"),
        from_ip("192.0.2.1"),
        Target::Relayed,
        at(T0),
    ) {
        Verdict::Refuse(reply) => {
            assert_eq!(reply.status(), Some(403));
            assert_eq!(reply.to_tag(), Some(access.reply_tag.as_str()));
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let mut dropping = control(&format!("unidentified = \"drop\"\n{config}"));
    assert!(matches!(
        dropping.check(
            &invite("x@y"),
            from_ip("192.0.2.1"),
            Target::Relayed,
            at(T0)
        ),
        Verdict::Drop
    ));
    assert_eq!(dropping.stats().dropped, 1);
}

#[test]
fn right_password_after_a_407_and_401_for_local_requests() {
    let mut access = control(CONFIG);
    let source = from_ip("10.0.1.5");
    let reply = challenge_of(access.check(&invite("x@y"), source, Target::Relayed, at(T0)));
    assert_eq!(reply.status(), Some(407));
    let challenge = reply
        .header("Proxy-Authenticate")
        .expect("challenge")
        .to_owned();
    assert!(
        challenge.contains("qop=\"auth\"") && challenge.contains("algorithm=MD5"),
        "{challenge}"
    );
    assert!(!challenge.contains("stale"), "{challenge}");
    let creds = answer(&challenge, "branch", "s3cret", 1, "INVITE");
    let msg = request(
        "INVITE",
        "x@y",
        &format!("Proxy-Authorization: {creds}\r\n"),
    );
    let endpoint = allowed(access.check(&msg, source, Target::Relayed, at(T0 + 5)));
    assert_eq!(
        endpoint.map(|e| (e.name.to_string(), e.by)),
        Some(("branch".into(), IdentifiedBy::Source))
    );

    let local = challenge_of(access.check(
        &request("OPTIONS", "x@y", ""),
        source,
        Target::Local,
        at(T0),
    ));
    assert_eq!(local.status(), Some(401));
    assert!(local.header("WWW-Authenticate").is_some());
}

#[test]
fn wrong_password_is_challenged_again_and_costs_a_token() {
    let mut access = control(CONFIG);
    let source = from_ip("10.0.1.5");
    let reply = challenge_of(access.check(&invite("x@y"), source, Target::Relayed, at(T0)));
    let challenge = reply
        .header("Proxy-Authenticate")
        .expect("challenge")
        .to_owned();
    let creds = answer(&challenge, "branch", "wrong", 1, "INVITE");
    let msg = request(
        "INVITE",
        "x@y",
        &format!("Proxy-Authorization: {creds}\r\n"),
    );
    challenge_of(access.check(&msg, source, Target::Relayed, at(T0)));
    // Burst 3: the first challenge and this failure took two; one more, then silence.
    challenge_of(access.check(&msg, source, Target::Relayed, at(T0)));
    assert!(matches!(
        access.check(&msg, source, Target::Relayed, at(T0)),
        Verdict::Drop
    ));
    assert_eq!(access.stats().rate_limited, 1);
    // Credentials of another endpoint's username do not count for this one.
    let mut access = control(CONFIG);
    let creds = answer(&challenge, "roamer", "roam", 1, "INVITE");
    let msg = request(
        "INVITE",
        "x@y",
        &format!("Proxy-Authorization: {creds}\r\n"),
    );
    challenge_of(access.check(&msg, source, Target::Relayed, at(T0)));
}

#[test]
fn a_replayed_nonce_count_is_refused() {
    let mut access = control(CONFIG);
    let source = from_ip("10.0.1.5");
    let reply = challenge_of(access.check(&invite("x@y"), source, Target::Relayed, at(T0)));
    let challenge = reply
        .header("Proxy-Authenticate")
        .expect("challenge")
        .to_owned();
    let first = request(
        "INVITE",
        "x@y",
        &format!(
            "Proxy-Authorization: {}\r\n",
            answer(&challenge, "branch", "s3cret", 1, "INVITE")
        ),
    );
    assert!(allowed(access.check(&first, source, Target::Relayed, at(T0 + 1))).is_some());
    match access.check(&first, source, Target::Relayed, at(T0 + 2)) {
        Verdict::Refuse(reply) => assert_eq!(reply.status(), Some(403)),
        other => panic!("expected the replay refused, got {other:?}"),
    }
    assert_eq!(access.stats().replays, 1);
    // The next nc on the same nonce is fine.
    let second = request(
        "INVITE",
        "x@y",
        &format!(
            "Proxy-Authorization: {}\r\n",
            answer(&challenge, "branch", "s3cret", 2, "INVITE")
        ),
    );
    assert!(allowed(access.check(&second, source, Target::Relayed, at(T0 + 3))).is_some());
}

#[test]
fn an_expired_nonce_gets_stale_true_then_succeeds() {
    let mut access = control(CONFIG);
    let source = from_ip("10.0.1.5");
    let reply = challenge_of(access.check(&invite("x@y"), source, Target::Relayed, at(T0)));
    let challenge = reply
        .header("Proxy-Authenticate")
        .expect("challenge")
        .to_owned();
    let late = request(
        "INVITE",
        "x@y",
        &format!(
            "Proxy-Authorization: {}\r\n",
            answer(&challenge, "branch", "s3cret", 1, "INVITE")
        ),
    );
    let stale = challenge_of(access.check(&late, source, Target::Relayed, at(T0 + 31)));
    let renewed = stale
        .header("Proxy-Authenticate")
        .expect("challenge")
        .to_owned();
    assert!(renewed.ends_with("stale=true"), "{renewed}");
    assert_ne!(param(&renewed, "nonce"), param(&challenge, "nonce"));
    let retry = request(
        "INVITE",
        "x@y",
        &format!(
            "Proxy-Authorization: {}\r\n",
            answer(&renewed, "branch", "s3cret", 1, "INVITE")
        ),
    );
    assert!(allowed(access.check(&retry, source, Target::Relayed, at(T0 + 32))).is_some());
    // A wrong password on an expired nonce is no reason to say stale.
    let wrong = request(
        "INVITE",
        "x@y",
        &format!(
            "Proxy-Authorization: {}\r\n",
            answer(&challenge, "branch", "bad", 1, "INVITE")
        ),
    );
    let plain = challenge_of(access.check(&wrong, source, Target::Relayed, at(T0 + 31)));
    assert!(
        !plain
            .header("Proxy-Authenticate")
            .expect("challenge")
            .contains("stale")
    );
}

#[test]
fn username_identifies_from_anywhere_with_ha1_and_sha256() {
    // HA1 of roamer:acme.test:roam.
    assert_eq!(
        digest::ha1(Algorithm::Md5, "roamer", "acme.test", "roam"),
        "398fb8a6b0b1d6ceeffe35c6e4a0e948"
    );
    let mut access = control(CONFIG);
    let source = from_ip("198.51.100.7");
    let reply = challenge_of(access.check(&invite("x@y"), source, Target::Relayed, at(T0)));
    let challenge = reply
        .header("Proxy-Authenticate")
        .expect("challenge")
        .to_owned();
    let msg = request(
        "INVITE",
        "x@y",
        &format!(
            "Proxy-Authorization: {}\r\n",
            answer(&challenge, "roamer", "roam", 1, "INVITE")
        ),
    );
    let endpoint = allowed(access.check(&msg, source, Target::Relayed, at(T0)));
    assert_eq!(
        endpoint.map(|e| (e.name.to_string(), e.by)),
        Some(("roamer".into(), IdentifiedBy::Username))
    );

    let sha = CONFIG
        .replace(
            "realm = \"acme.test\"",
            "realm = \"acme.test\"\nalgorithms = [\"SHA-256\", \"MD5\"]",
        )
        .replace(
            "ha1 = \"398FB8A6B0B1D6CEEFFE35C6E4A0E948\"",
            "password = \"roam\"",
        );
    let mut access = control(&sha);
    let reply = challenge_of(access.check(&invite("x@y"), source, Target::Relayed, at(T0)));
    let offers: Vec<&str> = reply.headers("Proxy-Authenticate").collect();
    assert_eq!(offers.len(), 2);
    assert!(offers[0].contains("algorithm=SHA-256") && offers[1].contains("algorithm=MD5"));
    let msg = request(
        "INVITE",
        "x@y",
        &format!(
            "Proxy-Authorization: {}\r\n",
            answer(offers[0], "roamer", "roam", 1, "INVITE")
        ),
    );
    assert!(allowed(access.check(&msg, source, Target::Relayed, at(T0))).is_some());
    // An unknown username is unidentified.
    let msg = request(
        "INVITE",
        "x@y",
        &format!(
            "Proxy-Authorization: {}\r\n",
            answer(offers[0], "nobody", "x", 1, "INVITE")
        ),
    );
    assert!(matches!(
        access.check(&msg, source, Target::Relayed, at(T0)),
        Verdict::Refuse(_)
    ));
}

#[test]
fn a_flood_from_one_source_is_dropped_while_endpoints_pass() {
    let mut access = control(CONFIG);
    let scanner = from_ip("203.0.113.9");
    let mut refused = 0;
    let mut dropped = 0;
    for i in 0..100 {
        // Without username endpoints the scanner would be refused; here it is challenged.
        match access.check(
            &invite("x@y"),
            scanner,
            Target::Relayed,
            at(T0) + Duration::from_millis(i * 20),
        ) {
            Verdict::Challenge(_) | Verdict::Refuse(_) => refused += 1,
            Verdict::Drop => dropped += 1,
            Verdict::Allow(e) => panic!("scanner allowed as {e:?}"),
        }
        assert!(
            allowed(access.check(&invite("x@y"), from_ip("10.0.0.1"), Target::Relayed, at(T0)))
                .is_some()
        );
    }
    // Burst 3 plus one token per second over two seconds, less a bit.
    assert_eq!(refused, 4);
    assert_eq!(dropped, 96);
    assert_eq!(access.stats().rate_limited, 96);
}

#[test]
fn dialog_followers_are_not_challenged_and_our_acks_are_absorbed() {
    let mut access = control(CONFIG);
    let stranger = from_ip("203.0.113.9");
    let reply = match access.check(&invite("x@y"), from_ip("10.0.1.5"), Target::Relayed, at(T0)) {
        Verdict::Challenge(reply) => reply,
        other => panic!("{other:?}"),
    };
    let tag = reply.to_tag().expect("our tag").to_owned();
    let ack = request("ACK", "x@y", "").to_bytes();
    let ack = String::from_utf8_lossy(&ack).replace(
        "<sip:bob@carrier.test>\r\n",
        &format!("<sip:bob@carrier.test>;tag={tag}\r\n"),
    );
    let ack = Message::parse(Bytes::from(ack)).expect("ack");
    assert!(matches!(
        access.check(&ack, from_ip("10.0.1.5"), Target::Relayed, at(T0)),
        Verdict::Drop
    ));
    let bye = request("BYE", "x@y", "").to_bytes();
    let bye = String::from_utf8_lossy(&bye).replace(
        "<sip:bob@carrier.test>\r\n",
        "<sip:bob@carrier.test>;tag=far\r\n",
    );
    let bye = Message::parse(Bytes::from(bye)).expect("bye");
    let pbx = allowed(access.check(&bye, from_ip("10.0.0.1"), Target::Relayed, at(T0)));
    assert_eq!(pbx.map(|e| e.name.to_string()), Some("pbx".into()));
    // A stranger's in-dialog requests pass unidentified, within its rate limit.
    for _ in 0..3 {
        assert_eq!(
            allowed(access.check(&bye, stranger, Target::Relayed, at(T0))),
            None
        );
    }
    assert!(matches!(
        access.check(&bye, stranger, Target::Relayed, at(T0)),
        Verdict::Drop
    ));
}

#[test]
fn consume_credentials_removes_only_ours() {
    let access = control(CONFIG);
    let ours =
        "Digest username=\"a\", realm=\"acme.test\", nonce=\"n\", uri=\"sip:x\", response=\"r\"";
    let theirs =
        "Digest username=\"a\", realm=\"carrier\", nonce=\"n\", uri=\"sip:x\", response=\"r\"";
    let mut msg = request(
        "INVITE",
        "x@y",
        &format!(
            "Proxy-Authorization: {ours}\r\nProxy-Authorization: {theirs}\r\nAuthorization: {ours}\r\n"
        ),
    );
    access.consume_credentials(&mut msg);
    assert_eq!(
        msg.headers("Proxy-Authorization").collect::<Vec<_>>(),
        vec![theirs]
    );
    assert_eq!(msg.header("Authorization"), None);
}

/// Rows of a credentials table identify endpoints by username (the table's `endpoint`
/// name), behind the config's own usernames; unknown sources are challenged, not refused.
#[test]
fn table_rows_identify_by_username_behind_the_config() {
    use self::table::{Rows, TableCredentials};
    let config: AccessConfig = toml::from_str(CONFIG).expect("access config");
    let mut rows = Rows::new();
    for (username, password, endpoint) in [
        ("dbuser", "dbpass", "from-table"),
        ("branch", "shadowed", "shadowed"),
    ] {
        rows.insert(
            username.to_owned(),
            StoredCredentials {
                endpoint: Arc::from(endpoint),
                secret: Secret::Password(password.to_owned()),
            },
        );
    }
    let rows = Arc::new(arc_swap::ArcSwap::from_pointee(rows));
    let store = Box::new(TableCredentials::new(&config.endpoint, rows.clone()));
    let mut access =
        AccessControl::with_store("acme", &config, SECRET, store).expect("valid config");
    let source = from_ip("192.0.2.9");
    let reply = challenge_of(access.check(&invite("x@y"), source, Target::Relayed, at(T0)));
    let challenge = reply
        .header("Proxy-Authenticate")
        .expect("challenge")
        .to_owned();
    let with = |user: &str, password: &str, nc: u32| {
        request(
            "INVITE",
            "x@y",
            &format!(
                "Proxy-Authorization: {}\r\n",
                answer(&challenge, user, password, nc, "INVITE")
            ),
        )
    };
    let endpoint = allowed(access.check(
        &with("dbuser", "dbpass", 1),
        source,
        Target::Relayed,
        at(T0),
    ))
    .expect("a table row authenticates");
    assert_eq!(&*endpoint.name, "from-table");
    assert_eq!(endpoint.by, IdentifiedBy::Username);
    // The config's "branch" wins over the row of the same username.
    challenge_of(access.check(
        &with("branch", "shadowed", 2),
        source,
        Target::Relayed,
        at(T0),
    ));
    // A row removed by a reload stops working at once.
    rows.store(Arc::new(Rows::new()));
    assert!(matches!(
        access.check(
            &with("dbuser", "dbpass", 3),
            source,
            Target::Relayed,
            at(T0)
        ),
        Verdict::Refuse(_)
    ));
    let stats = access.stats();
    assert_eq!(
        (
            stats.challenged,
            stats.allowed,
            stats.refused,
            stats.auth_failed,
            stats.unidentified
        ),
        (2, 1, 1, 1, 1)
    );
}

/// The listeners of one tenant count into one shared set.
#[test]
fn counters_are_shared_by_a_tenants_listeners() {
    let counters = Arc::new(AccessCounters::default());
    let mut udp = control(CONFIG).with_counters(counters.clone());
    let mut tcp = control(CONFIG).with_counters(counters.clone());
    for access in [&mut udp, &mut tcp] {
        assert!(matches!(
            access.check(
                &invite("x@y"),
                from_ip("192.0.2.1"),
                Target::Relayed,
                at(T0)
            ),
            Verdict::Challenge(_)
        ));
    }
    assert_eq!(counters.snapshot().challenged, 2);
    assert_eq!(udp.stats(), tcp.stats());
}
