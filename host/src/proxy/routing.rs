//! Pure routing decisions of RFC 3261 §16: who "we" are, static route rules, the next hop of
//! a request, loop-detecting branch values, and the Via / Record-Route values the proxy writes.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;

use siphost_sip::{Message, NameAddr, Uri};

use crate::config::{ProxyConfig, RouteRule};
use crate::transport::{Listener, TransportKind};

/// RFC 3261 magic cookie that starts every branch this proxy creates.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// The host:port pairs this proxy answers to, from its listeners.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    names: Vec<(String, u16)>,
}

impl Identities {
    pub fn new(listeners: &[Listener]) -> Self {
        let mut names = Vec::new();
        for listener in listeners {
            let port = listener.local.port();
            let mut add = |host: String| {
                let host = host.to_ascii_lowercase();
                if !names.contains(&(host.clone(), port)) {
                    names.push((host, port));
                }
            };
            add(listener.host.clone());
            let ip = listener.local.ip();
            if ip.is_unspecified() {
                // A wildcard bind also answers on loopback.
                add(if ip.is_ipv4() { "127.0.0.1" } else { "::1" }.to_owned());
            } else {
                add(ip.to_string());
            }
        }
        Identities { names }
    }

    /// Whether `host` (a name or IP, IPv6 with or without brackets) and `port` (default
    /// 5060) name one of our listeners.
    pub fn is_us(&self, host: &str, port: Option<u16>) -> bool {
        let port = port.unwrap_or(5060);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip = bare.parse::<IpAddr>().ok();
        self.names.iter().any(|(name, p)| {
            *p == port
                && match ip {
                    Some(ip) => name.parse::<IpAddr>().ok() == Some(ip),
                    None => name.eq_ignore_ascii_case(bare),
                }
        })
    }

    /// Whether a URI (bare or in `<...>`) points at this proxy.
    pub fn uri_is_us(&self, uri: &str) -> bool {
        Uri::parse(strip_angle(uri)).is_ok_and(|u| self.is_us(u.host, u.port))
    }
}

/// The URI inside a name-addr (`"Bob" <sip:b@h>;x` → `sip:b@h`), or the text itself.
pub fn strip_angle(value: &str) -> &str {
    let value = value.trim();
    match NameAddr::parse(value) {
        Ok(name_addr) => name_addr.uri,
        Err(_) => value,
    }
}

/// A `[[proxy.route]]` rule with its conditions prepared for matching.
#[derive(Debug, Clone)]
struct Rule {
    method: Option<String>,
    user_prefix: Option<String>,
    domain: Option<String>,
    next_hop: String,
}

impl Rule {
    fn matches(&self, method: &str, user: Option<&str>, host: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .user_prefix
                .as_deref()
                .is_none_or(|prefix| user.is_some_and(|u| u.starts_with(prefix)))
            && self
                .domain
                .as_deref()
                .is_none_or(|d| d.eq_ignore_ascii_case(host))
    }
}

/// Static routing from `[proxy]`: rules (first match wins) and the default route.
#[derive(Debug, Clone, Default)]
pub struct Router {
    rules: Vec<Rule>,
    default_route: Option<String>,
}

/// Why no next hop could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute(pub &'static str);

impl Router {
    pub fn new(config: &ProxyConfig) -> Self {
        let rule = |r: &RouteRule| Rule {
            method: r.method.clone(),
            user_prefix: r.ruri_user_prefix.clone(),
            domain: r.ruri_domain.clone(),
            next_hop: r.next_hop.clone(),
        };
        Router {
            rules: config.route.iter().map(rule).collect(),
            default_route: config.default_route.clone(),
        }
    }

    /// The next hop (a URI) of a request whose own Routes were already removed: its top
    /// Route; else the first matching rule; else its R-URI when that points elsewhere; else
    /// the default route.
    pub fn next_hop(&self, msg: &Message, us: &Identities) -> Result<String, NoRoute> {
        if let Some(route) = msg.header_values("Route").next() {
            return Ok(strip_angle(route).to_owned());
        }
        let ruri = msg.request_uri().ok_or(NoRoute("no Request-URI"))?;
        let parsed = Uri::parse(ruri).map_err(|_| NoRoute("unroutable Request-URI"))?;
        let method = msg.method().map_or("", |m| m.as_str());
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.matches(method, parsed.user, parsed.host))
        {
            return Ok(rule.next_hop.clone());
        }
        if !us.is_us(parsed.host, parsed.port) && !parsed.host.is_empty() {
            return Ok(ruri.to_owned());
        }
        self.default_route
            .clone()
            .ok_or(NoRoute("no route for a Request-URI naming this proxy"))
    }
}

/// RFC 3261 §16.4: fixes up a request from a strict router (its R-URI is our Record-Route
/// URI: no user part, names us) by moving the last Route into the R-URI; then removes the
/// top Routes that name us (loose routing). Returns the first removed Route value.
pub fn preprocess_route(msg: &mut Message, us: &Identities) -> Option<String> {
    let strict = msg.request_uri().is_some_and(|ruri| {
        Uri::parse(ruri).is_ok_and(|u| u.user.is_none() && us.is_us(u.host, u.port))
    }) && msg.header_values("Route").next().is_some();
    if strict && let Some(last) = msg.header_values("Route").last().map(str::to_owned) {
        remove_last_route(msg);
        msg.set_request_uri(strip_angle(&last));
    }
    let mut own = None;
    while msg
        .header_values("Route")
        .next()
        .is_some_and(|top| us.uri_is_us(top))
    {
        let removed = msg.remove_first_value("Route");
        if own.is_none() {
            own = removed;
        }
    }
    own
}

/// Removes the last Route value, rewriting the Route headers without it.
fn remove_last_route(msg: &mut Message) {
    let mut values: Vec<String> = msg.header_values("Route").map(str::to_owned).collect();
    values.pop();
    msg.remove_header("Route");
    for value in values {
        msg.append_header("Route", &value);
    }
}

/// The §16.6 step 8 loop-detection hash of a request as received: R-URI, From tag, To tag,
/// Call-ID, CSeq number, Proxy-Require and Proxy-Authorization. (The top Via is left out: a
/// looped request comes back under a Via of ours, never with the same top Via.)
pub fn loop_hash(msg: &Message) -> u64 {
    let mut hasher = DefaultHasher::new();
    msg.request_uri().hash(&mut hasher);
    msg.from_tag().hash(&mut hasher);
    msg.to_tag().hash(&mut hasher);
    msg.call_id().hash(&mut hasher);
    msg.cseq().map(|(n, _)| n).hash(&mut hasher);
    for value in msg.headers("Proxy-Require") {
        value.hash(&mut hasher);
    }
    for value in msg.headers("Proxy-Authorization") {
        value.hash(&mut hasher);
    }
    hasher.finish()
}

/// A branch embedding the loop hash, then a per-process tag and counter for uniqueness.
pub fn make_branch(loop_hash: u64, instance: u32, counter: u64) -> String {
    let mut branch = String::with_capacity(MAGIC_COOKIE.len() + 40);
    branch.push_str(MAGIC_COOKIE);
    push_hex(&mut branch, loop_hash, 16);
    push_hex(&mut branch, u64::from(instance), 8);
    push_hex(&mut branch, counter, 0);
    branch
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `value` in lower-case hex, zero-padded to `width` digits. Ids and branches are
/// made for every message: `format!` would start from an empty string and grow it twice.
pub fn push_hex(out: &mut String, value: u64, width: usize) {
    let used = (64 - value.leading_zeros() as usize).div_ceil(4);
    for i in (0..used.max(width).max(1)).rev() {
        let nibble = value.checked_shr(4 * i as u32).unwrap_or(0) & 0xf;
        out.push(char::from(HEX_DIGITS[nibble as usize]));
    }
}

/// A deterministic branch for statelessly forwarded requests (ACK for 2xx, CANCEL without a
/// response context) from what identifies the upstream transaction: retransmissions get the
/// same branch (§16.11).
pub fn stateless_branch(upstream_branch: &str) -> String {
    let mut hasher = DefaultHasher::new();
    upstream_branch.hash(&mut hasher);
    let mut branch = String::with_capacity(MAGIC_COOKIE.len() + 17);
    branch.push_str(MAGIC_COOKIE);
    push_hex(&mut branch, hasher.finish(), 16);
    branch.push('s');
    branch
}

/// §16.3 step 4: the request looped when one of our own Vias carries a branch with the same
/// loop hash (a different hash is a spiral, which is fine).
pub fn is_loop(msg: &Message, us: &Identities, hash: u64) -> bool {
    // `{hash:016x}` without a string per request.
    let wanted: [u8; 16] =
        std::array::from_fn(|i| HEX_DIGITS[((hash >> (60 - 4 * i)) & 0xf) as usize]);
    msg.header_values("Via").any(|value| {
        siphost_sip::Via::parse(value).is_ok_and(|via| {
            us.is_us(via.host, via.port)
                && via
                    .branch()
                    .and_then(|b| b.strip_prefix(MAGIC_COOKIE))
                    .is_some_and(|rest| rest.as_bytes().starts_with(&wanted))
        })
    })
}

/// The Via value this proxy adds on `listener` (formatted where it is written).
pub fn via_value<'a>(listener: &'a Listener, branch: &'a str) -> impl fmt::Display + 'a {
    fmt::from_fn(move |f| {
        write!(
            f,
            "SIP/2.0/{} {};branch={branch}",
            listener.kind.via_name(),
            listener.sent_by()
        )
    })
}

/// The Record-Route value for `listener`, with extra URI parameters after `;lr`.
pub fn record_route_value<'a>(listener: &'a Listener, params: &'a str) -> impl fmt::Display + 'a {
    fmt::from_fn(move |f| {
        write!(
            f,
            "<sip:{};transport={};lr{params}>",
            listener.sent_by(),
            listener.kind.as_str()
        )
    })
}

/// Whether this host's own Route value (as [`record_route_value`] wrote it) carries
/// parameters a filter added after `;lr`.
pub fn carries_filter_params(own_route: &str) -> bool {
    own_route
        .find(";lr")
        .is_some_and(|at| own_route[at + 3..].starts_with(';'))
}

/// Whether a request may create a dialog and so gets a Record-Route (out of dialog, and not
/// a REGISTER, ACK or CANCEL).
pub fn wants_record_route(msg: &Message) -> bool {
    msg.to_tag().is_none()
        && !matches!(
            msg.method().map(|m| m.as_str()),
            Some("REGISTER" | "ACK" | "CANCEL") | None
        )
}

/// The transport of a Via value (`SIP/2.0/TCP ...`).
pub fn via_transport(transport: &str) -> Option<TransportKind> {
    TransportKind::parse(transport)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_matches_format() {
        let mut values = vec![0, 1, 0xf, 0x10, u64::from(u32::MAX), u64::MAX];
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for value in values {
            for width in [0, 1, 8, 16, 20] {
                let mut out = String::from("z");
                push_hex(&mut out, value, width);
                assert_eq!(out, format!("z{value:0width$x}"), "{value} {width}");
            }
        }
    }

    use super::*;
    use bytes::Bytes;

    fn listener(kind: TransportKind, addr: &str) -> Listener {
        let local: std::net::SocketAddr = addr.parse().expect("addr");
        Listener {
            kind,
            local,
            host: local.ip().to_string(),
        }
    }

    fn us() -> Identities {
        Identities::new(&[
            listener(TransportKind::Udp, "127.0.0.1:5060"),
            listener(TransportKind::Tcp, "127.0.0.1:5061"),
        ])
    }

    fn request(lines: &[&str]) -> Message {
        let mut text = lines.join("\r\n");
        text.push_str("\r\nContent-Length: 0\r\n\r\n");
        Message::parse(Bytes::from(text)).expect("test request parses")
    }

    fn invite(ruri: &str, extra: &[&str]) -> Message {
        let start = format!("INVITE {ruri} SIP/2.0");
        let mut lines = vec![
            start.as_str(),
            "Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKabc",
            "Max-Forwards: 70",
            "From: <sip:a@127.0.0.1>;tag=1",
            "To: <sip:b@127.0.0.1>",
            "Call-ID: c1",
            "CSeq: 1 INVITE",
        ];
        lines.extend_from_slice(extra);
        request(&lines)
    }

    #[test]
    fn identities_match_host_and_default_port() {
        let us = us();
        assert!(us.is_us("127.0.0.1", Some(5060)));
        assert!(us.is_us("127.0.0.1", None));
        assert!(us.is_us("127.0.0.1", Some(5061)));
        assert!(!us.is_us("127.0.0.1", Some(5090)));
        assert!(!us.is_us("127.0.0.2", Some(5060)));
        assert!(us.uri_is_us("<sip:127.0.0.1:5060;transport=udp;lr>"));
        assert!(!us.uri_is_us("<sip:127.0.0.1:5090;lr>"));
        assert!(carries_filter_params(
            "<sip:127.0.0.1:5060;transport=udp;lr;vsf=x>"
        ));
        assert!(!carries_filter_params(
            "<sip:127.0.0.1:5060;transport=udp;lr>"
        ));
    }

    #[test]
    fn loose_route_pops_our_routes_only() {
        let mut msg = invite(
            "sip:b@127.0.0.1:5090",
            &[
                "Route: <sip:127.0.0.1:5060;transport=udp;lr;vsf=x>, <sip:127.0.0.1:5061;transport=tcp;lr>",
                "Route: <sip:10.0.0.9;lr>",
            ],
        );
        let own = preprocess_route(&mut msg, &us());
        assert_eq!(
            own.as_deref(),
            Some("<sip:127.0.0.1:5060;transport=udp;lr;vsf=x>")
        );
        let routes: Vec<&str> = msg.header_values("Route").collect();
        assert_eq!(routes, ["<sip:10.0.0.9;lr>"]);
        assert_eq!(msg.request_uri(), Some("sip:b@127.0.0.1:5090"));
    }

    #[test]
    fn strict_router_request_is_fixed_up() {
        let mut msg = invite(
            "sip:127.0.0.1:5060;transport=udp;lr",
            &["Route: <sip:10.0.0.9;lr>, <sip:b@10.0.0.7:5070>"],
        );
        preprocess_route(&mut msg, &us());
        assert_eq!(msg.request_uri(), Some("sip:b@10.0.0.7:5070"));
        let routes: Vec<&str> = msg.header_values("Route").collect();
        assert_eq!(routes, ["<sip:10.0.0.9;lr>"]);
    }

    #[test]
    fn request_uri_naming_a_user_here_is_not_a_strict_route() {
        let mut msg = invite("sip:bob@127.0.0.1:5060", &["Route: <sip:10.0.0.9;lr>"]);
        preprocess_route(&mut msg, &us());
        assert_eq!(msg.request_uri(), Some("sip:bob@127.0.0.1:5060"));
        assert_eq!(msg.header_values("Route").count(), 1);
    }

    fn router(rules: &str) -> Router {
        let config: ProxyConfig = toml::from_str(rules).expect("proxy config");
        Router::new(&config)
    }

    #[test]
    fn next_hop_prefers_route_then_rules_then_ruri_then_default() {
        let router = router(
            r#"
            default_route = "sip:127.0.0.1:5090"
            [[route]]
            method = "INVITE"
            ruri_user_prefix = "+1"
            next_hop = "sip:127.0.0.1:5091"
            [[route]]
            ruri_domain = "Example.com"
            next_hop = "sip:127.0.0.1:5092;transport=tcp"
            "#,
        );
        let us = us();
        let routed = invite("sip:b@127.0.0.1:5060", &["Route: <sip:10.0.0.9;lr>"]);
        assert_eq!(
            router.next_hop(&routed, &us).as_deref(),
            Ok("sip:10.0.0.9;lr")
        );
        let plus = invite("sip:+15551234@127.0.0.1:5060", &[]);
        assert_eq!(
            router.next_hop(&plus, &us).as_deref(),
            Ok("sip:127.0.0.1:5091")
        );
        let domain = invite("sip:bob@example.com", &[]);
        assert_eq!(
            router.next_hop(&domain, &us).as_deref(),
            Ok("sip:127.0.0.1:5092;transport=tcp")
        );
        let elsewhere = invite("sip:bob@10.1.1.1:5070", &[]);
        assert_eq!(
            router.next_hop(&elsewhere, &us).as_deref(),
            Ok("sip:bob@10.1.1.1:5070")
        );
        let here = invite("sip:bob@127.0.0.1:5060", &[]);
        assert_eq!(
            router.next_hop(&here, &us).as_deref(),
            Ok("sip:127.0.0.1:5090")
        );
        let no_default = Router::default();
        assert!(no_default.next_hop(&here, &us).is_err());
    }

    #[test]
    fn loop_is_detected_by_our_via_with_the_same_hash() {
        let us = us();
        let msg = invite("sip:b@127.0.0.1:5090", &[]);
        let hash = loop_hash(&msg);
        assert!(!is_loop(&msg, &us, hash));
        let branch = make_branch(hash, 7, 1);
        assert!(branch.starts_with(MAGIC_COOKIE));
        let our_via = format!("Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}");
        let looped = invite("sip:b@127.0.0.1:5090", &[our_via.as_str()]);
        assert!(is_loop(&looped, &us, loop_hash(&looped)));
        // A spiral (the R-URI changed on the way) is not a loop.
        let spiral = invite("sip:c@127.0.0.1:5090", &[our_via.as_str()]);
        assert!(!is_loop(&spiral, &us, loop_hash(&spiral)));
    }

    #[test]
    fn via_and_record_route_values() {
        let udp = listener(TransportKind::Udp, "127.0.0.1:5060");
        assert_eq!(
            via_value(&udp, "z9hG4bKx").to_string(),
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx"
        );
        assert_eq!(
            record_route_value(&udp, "").to_string(),
            "<sip:127.0.0.1:5060;transport=udp;lr>"
        );
        let tcp6 = listener(TransportKind::Tcp, "[::1]:5061");
        assert_eq!(
            record_route_value(&tcp6, ";vsf=abc").to_string(),
            "<sip:[::1]:5061;transport=tcp;lr;vsf=abc>"
        );
        assert_eq!(stateless_branch("z9hG4bKa"), stateless_branch("z9hG4bKa"));
        assert_ne!(stateless_branch("z9hG4bKa"), stateless_branch("z9hG4bKb"));
    }

    #[test]
    fn record_route_only_for_dialog_creating_requests() {
        assert!(wants_record_route(&invite("sip:b@h", &[])));
        let in_dialog = request(&[
            "BYE sip:b@h SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKabc",
            "From: <sip:a@h>;tag=1",
            "To: <sip:b@h>;tag=2",
            "Call-ID: c1",
            "CSeq: 2 BYE",
        ]);
        assert!(!wants_record_route(&in_dialog));
        let register = request(&[
            "REGISTER sip:h SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKabc",
            "From: <sip:a@h>;tag=1",
            "To: <sip:a@h>",
            "Call-ID: c1",
            "CSeq: 1 REGISTER",
        ]);
        assert!(!wants_record_route(&register));
    }
}
