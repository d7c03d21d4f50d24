//! The example proxy-wasm SDK filter in a running siphost, driven by SIPp: the
//! callee sees `X-Proxy-Wasm: hello` on every INVITE; User-Agent blocked-agent gets 403.
//!
//! Needs `cargo build --profile wasm --target wasm32-wasip1 -p proxy-wasm-filter`.

mod common;

use std::time::Duration;

use common::{
    HeaderChecks, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport, record_route_regex,
    render, sip_uri, siphost_proxy_config,
};

const SIPP_TIMEOUT: Duration = Duration::from_secs(60);
const CALLS: u32 = 10;

fn proxy_wasm_filter() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .ancestors()
        .nth(3)
        .expect("target dir")
        .join("wasm32-wasip1/wasm/proxy_wasm_filter.wasm");
    assert!(path.exists(), "{} missing: build it first", path.display());
    path
}

fn sipp(
    scratch: &Scratch,
    name: &'static str,
    ports: PortBlock,
    remote: Option<u16>,
    xml: &str,
) -> Sipp {
    Sipp::start(
        scratch,
        SippRole {
            name,
            scenario: scratch.write(&format!("{name}.xml"), xml),
            transport: Transport::Udp,
            ports,
            remote,
            calls: CALLS,
            rate: remote.map(|_| 10),
            timeout: SIPP_TIMEOUT,
        },
    )
}

#[test]
fn calls_carry_the_filter_header_and_the_blocked_agent_gets_403() {
    let test = "proxy_wasm_sipp";
    let scratch = Scratch::new(test);
    let proxy_ports = PortBlock::reserve(test, 1);
    let proxy = proxy_ports.port(0);
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let callee_port = callee_ports.port(0);
    let mut config = siphost_proxy_config(proxy, &sip_uri(callee_port, Transport::Udp), 500);
    config.push_str(&format!(
        "\n[[tenant]]\nname = \"default\"\nlisten = [\"udp:127.0.0.1:{proxy}\"]\nfailure_policy = \"fail-open\"\n[[tenant.filter]]\npath = \"{}\"\n",
        proxy_wasm_filter().display()
    ));
    let checks = HeaderChecks::new("invite")
        .matches("X-Proxy-Wasm", 1, "^ *hello$")
        .matches("Record-Route", 1, &record_route_regex(proxy));
    let callee_xml = render(
        "sipp/uas_call.xml",
        &[
            ("INVITE_CHECKS", checks.xml()),
            ("INVITE_RECORD_ROUTES", checks.resend_lines("Record-Route")),
        ],
    );
    let mut callee = sipp(&scratch, "callee", callee_ports, None, &callee_xml);
    let _siphost = Siphost::start(&scratch, &config);

    let call = render(
        "sipp/uac_call.xml",
        &[("FINAL_CHECKS", HeaderChecks::new("final").xml())],
    );
    let mut caller = sipp(
        &scratch,
        "caller",
        PortBlock::reserve(&format!("{test}-caller"), 5),
        Some(proxy),
        &call,
    );
    let refused = render(
        "sipp/uac_unreachable.xml",
        &[
            ("FINAL_STATUS", "403".to_string()),
            ("FINAL_CHECKS", HeaderChecks::new("refused").xml()),
        ],
    )
    .replacen(
        "Max-Forwards: 70",
        "Max-Forwards: 70\n      User-Agent: blocked-agent",
        1,
    );
    let mut blocked = sipp(
        &scratch,
        "blocked",
        PortBlock::reserve(&format!("{test}-blocked"), 5),
        Some(proxy),
        &refused,
    );

    caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    callee.assert_checked_every_call(&checks);
    blocked.assert_all_calls_succeeded();
}
