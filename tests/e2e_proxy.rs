//! End-to-end proxy tests against real peers: SIPp caller → siphost → SIPp
//! callee over UDP and TCP (full call, CANCEL, 486, unreachable callee, a
//! CANCEL matching no transaction) and with Kamailio 5.6 as siphost's next hop.
//!
//! Every flow runs several calls and asserts both SIPp exit codes (0 = every
//! call succeeded) and wire properties checked inside the scenarios on every
//! call: each proxy's Record-Route and Via on top at the callee, the proxy's
//! Via gone again at the caller. The `reference_kamailio_*` tests run the
//! same scenarios with Kamailio as the proxy, so a failure that only shows
//! with siphost points at siphost rather than at the scenarios.

mod common;

use std::time::Duration;

use common::{
    HeaderChecks, Kamailio, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport,
    record_route_regex, render, sip_uri, siphost_proxy_config, via_regex,
};

/// Calls per flow and the rate they start at (calls per second).
const CALLS: u32 = 20;
const RATE: u32 = 10;
/// SIPp's own global timeout for one flow.
const SIPP_TIMEOUT: Duration = Duration::from_secs(40);
/// siphost's T1 in the normal flows (RFC 3261 default).
const DEFAULT_T1_MS: u32 = 500;
/// siphost's T1 when the callee is unreachable: Timer B = 64 × T1 = 3.2 s.
const FAST_T1_MS: u32 = 50;

/// A proxy on the path between caller and callee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    Siphost,
    Kamailio,
}

/// What the callee does with each INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// INVITE/180/200/ACK/BYE through the record-route.
    Call,
    /// The caller cancels after the 180.
    CancelBeforeAnswer,
    /// The callee answers 486.
    Busy,
    /// Nothing listens at the next hop; the proxy answers `status`.
    Unreachable { status: u16 },
    /// A lone CANCEL (no INVITE): forwarded statelessly, the callee's 200 back.
    StrayCancel,
}

impl Flow {
    fn scenarios(self) -> (&'static str, Option<&'static str>) {
        match self {
            Flow::Call => ("uac_call", Some("uas_call")),
            Flow::CancelBeforeAnswer => ("uac_cancel", Some("uas_cancel")),
            Flow::Busy => ("uac_busy", Some("uas_busy")),
            Flow::Unreachable { .. } => ("uac_unreachable", None),
            Flow::StrayCancel => ("uac_stray_cancel", Some("uas_stray_cancel")),
        }
    }

    /// The request the callee checks, as the label of its checks and the
    /// placeholder they fill in the callee's scenario.
    fn checked_request(self) -> (&'static str, &'static str) {
        match self {
            Flow::StrayCancel => ("cancel", "CANCEL_CHECKS"),
            _ => ("invite", "INVITE_CHECKS"),
        }
    }
}

/// Runs `flow` over `transport` through `path` (the proxies from caller to
/// callee) and asserts that every call succeeded and was checked on the wire.
fn run(test: &str, path: &[Proxy], transport: Transport, flow: Flow) {
    let scratch = Scratch::new(test);
    // One port per proxy, plus one that stays closed for the unreachable flow
    // (reserved, so no other test binds it meanwhile).
    let proxy_ports = PortBlock::reserve(test, path.len() as u16 + 1);
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let caller_ports = PortBlock::reserve(&format!("{test}-caller"), 5);
    let hop_port = |index: usize| proxy_ports.port(index as u16);
    let callee_port = match flow {
        Flow::Unreachable { .. } => proxy_ports.port(path.len() as u16),
        _ => callee_ports.port(0),
    };
    let caller_port = caller_ports.port(0);

    // At the callee: the last proxy's Via and Record-Route on top, the
    // caller's Via at the bottom, nothing else. A CANCEL is not
    // record-routed, and its Max-Forwards shows each proxy forwarded it
    // (a stateless proxy decrements it too).
    let (checked_label, checks_key) = flow.checked_request();
    let record_routed = flow != Flow::StrayCancel;
    let mut request_checks = HeaderChecks::new(checked_label);
    for (depth, index) in (0..path.len()).rev().enumerate() {
        let nth = depth as u32 + 1;
        request_checks = request_checks.matches("Via", nth, &via_regex(transport, hop_port(index)));
        if record_routed {
            request_checks =
                request_checks.matches("Record-Route", nth, &record_route_regex(hop_port(index)));
        }
    }
    let hops = path.len() as u32;
    request_checks = request_checks
        .matches("Via", hops + 1, &via_regex(transport, caller_port))
        .absent("Via", hops + 2);
    request_checks = if record_routed {
        request_checks.absent("Record-Route", hops + 1)
    } else {
        request_checks.absent("Record-Route", 1).matches(
            "Max-Forwards",
            1,
            &format!("^ *{}[^0-9]*$", 70 - hops),
        )
    };

    // At the caller: only its own Via; a 200 also carries every Record-Route.
    let mut final_checks = HeaderChecks::new("final")
        .matches("Via", 1, &via_regex(transport, caller_port))
        .absent("Via", 2);
    if flow == Flow::Call {
        for (depth, index) in (0..path.len()).rev().enumerate() {
            final_checks = final_checks.matches(
                "Record-Route",
                depth as u32 + 1,
                &record_route_regex(hop_port(index)),
            );
        }
        final_checks = final_checks.absent("Record-Route", hops + 1);
    }
    if flow == Flow::StrayCancel {
        // The callee's To tag: the 200 is the callee's, not one made up on the way.
        final_checks = final_checks.matches("To", 1, ";tag=[0-9]+SIPpTag01[0-9]+");
    }

    let (caller_scenario, callee_scenario) = flow.scenarios();
    let mut callee = callee_scenario.map(|scenario| {
        let mut vars = vec![(checks_key, request_checks.xml())];
        match flow {
            Flow::Call => vars.push((
                "INVITE_RECORD_ROUTES",
                request_checks.resend_lines("Record-Route"),
            )),
            Flow::CancelBeforeAnswer => {
                vars.push(("INVITE_VIAS", request_checks.resend_lines("Via")));
            }
            Flow::Busy | Flow::Unreachable { .. } | Flow::StrayCancel => {}
        }
        let xml = render(&format!("sipp/{scenario}.xml"), &vars);
        Sipp::start(
            &scratch,
            SippRole {
                name: "callee",
                scenario: scratch.write("callee.xml", &xml),
                transport,
                ports: callee_ports,
                remote: None,
                calls: CALLS,
                rate: None,
                timeout: SIPP_TIMEOUT,
            },
        )
    });

    // Start from the proxy nearest the callee so every next hop is up first.
    let t1_ms = match flow {
        Flow::Unreachable { .. } => FAST_T1_MS,
        _ => DEFAULT_T1_MS,
    };
    let mut siphosts = Vec::new();
    let mut kamailios = Vec::new();
    let mut next_hop = sip_uri(callee_port, transport);
    for (index, proxy) in path.iter().enumerate().rev() {
        let port = hop_port(index);
        match proxy {
            Proxy::Siphost => siphosts.push(Siphost::start(
                &scratch,
                &siphost_proxy_config(port, &next_hop, t1_ms),
            )),
            Proxy::Kamailio => {
                kamailios.push(Kamailio::start(&scratch, "relay.cfg", port, &next_hop));
            }
        }
        next_hop = sip_uri(port, transport);
    }

    let mut caller_vars = vec![("FINAL_CHECKS", final_checks.xml())];
    if let Flow::Unreachable { status } = flow {
        caller_vars.push(("FINAL_STATUS", status.to_string()));
    }
    let caller_xml = render(&format!("sipp/{caller_scenario}.xml"), &caller_vars);
    let mut caller = Sipp::start(
        &scratch,
        SippRole {
            name: "caller",
            scenario: scratch.write("caller.xml", &caller_xml),
            transport,
            ports: caller_ports,
            remote: Some(hop_port(0)),
            calls: CALLS,
            rate: Some(RATE),
            timeout: SIPP_TIMEOUT,
        },
    );

    caller.assert_all_calls_succeeded();
    caller.assert_checked_every_call(&final_checks);
    if let Some(callee) = callee.as_mut() {
        callee.assert_all_calls_succeeded();
        callee.assert_checked_every_call(&request_checks);
    }
    // Peers stop when dropped: caller, proxies, callee, then the scratch dir.
    drop(caller);
    drop(siphosts);
    drop(kamailios);
}

const SIPHOST: &[Proxy] = &[Proxy::Siphost];
const KAMAILIO: &[Proxy] = &[Proxy::Kamailio];
const SIPHOST_THEN_KAMAILIO: &[Proxy] = &[Proxy::Siphost, Proxy::Kamailio];

#[test]
fn udp_full_call_through_record_route() {
    run("udp_full_call", SIPHOST, Transport::Udp, Flow::Call);
}

#[test]
fn tcp_full_call_through_record_route() {
    run("tcp_full_call", SIPHOST, Transport::Tcp, Flow::Call);
}

#[test]
fn udp_cancel_before_answer() {
    run(
        "udp_cancel",
        SIPHOST,
        Transport::Udp,
        Flow::CancelBeforeAnswer,
    );
}

#[test]
fn tcp_cancel_before_answer() {
    run(
        "tcp_cancel",
        SIPHOST,
        Transport::Tcp,
        Flow::CancelBeforeAnswer,
    );
}

#[test]
fn udp_callee_busy_486_reaches_caller() {
    run("udp_busy", SIPHOST, Transport::Udp, Flow::Busy);
}

#[test]
fn tcp_callee_busy_486_reaches_caller() {
    run("tcp_busy", SIPHOST, Transport::Tcp, Flow::Busy);
}

#[test]
fn udp_unreachable_callee_gives_408() {
    run(
        "udp_unreachable",
        SIPHOST,
        Transport::Udp,
        Flow::Unreachable { status: 408 },
    );
}

#[test]
fn tcp_refused_callee_gives_503() {
    run(
        "tcp_unreachable",
        SIPHOST,
        Transport::Tcp,
        Flow::Unreachable { status: 503 },
    );
}

#[test]
fn udp_cancel_matching_no_transaction_is_forwarded_statelessly() {
    run(
        "udp_stray_cancel",
        SIPHOST,
        Transport::Udp,
        Flow::StrayCancel,
    );
}

#[test]
fn udp_full_call_with_kamailio_next_hop() {
    run(
        "udp_kamailio_next_hop",
        SIPHOST_THEN_KAMAILIO,
        Transport::Udp,
        Flow::Call,
    );
}

#[test]
fn tcp_full_call_with_kamailio_next_hop() {
    run(
        "tcp_kamailio_next_hop",
        SIPHOST_THEN_KAMAILIO,
        Transport::Tcp,
        Flow::Call,
    );
}

#[test]
fn reference_kamailio_udp_full_call() {
    run("ref_udp_full_call", KAMAILIO, Transport::Udp, Flow::Call);
}

#[test]
fn reference_kamailio_tcp_full_call() {
    run("ref_tcp_full_call", KAMAILIO, Transport::Tcp, Flow::Call);
}

#[test]
fn reference_kamailio_udp_cancel_before_answer() {
    run(
        "ref_udp_cancel",
        KAMAILIO,
        Transport::Udp,
        Flow::CancelBeforeAnswer,
    );
}

#[test]
fn reference_kamailio_tcp_cancel_before_answer() {
    run(
        "ref_tcp_cancel",
        KAMAILIO,
        Transport::Tcp,
        Flow::CancelBeforeAnswer,
    );
}

#[test]
fn reference_kamailio_udp_busy() {
    run("ref_udp_busy", KAMAILIO, Transport::Udp, Flow::Busy);
}

#[test]
fn reference_kamailio_tcp_busy() {
    run("ref_tcp_busy", KAMAILIO, Transport::Tcp, Flow::Busy);
}

#[test]
fn reference_kamailio_udp_unreachable_gives_408() {
    run(
        "ref_udp_unreachable",
        KAMAILIO,
        Transport::Udp,
        Flow::Unreachable { status: 408 },
    );
}
