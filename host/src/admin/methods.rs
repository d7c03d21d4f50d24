//! The host's own RPC methods, Kamailio's shapes where Kamailio has them: `core.*`,
//! `stats.get_statistics`, `tenant.list`, and the `status.*` methods the status page reads.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::metrics::HostMetrics;
use super::registrations::{RegistrationState, StateCount, kamailio_totals};
use super::{Router, RpcError, param, param_index, param_str};

/// The status table shows at most this many registrations per search.
const MAX_SEARCH: usize = 500;

/// Adds the host's methods to `router`.
pub fn register(router: &mut Router, metrics: Arc<HostMetrics>) {
    let m = metrics.clone();
    router.register(
        "core.uptime",
        "Current time, start time (UTC, ctime format) and uptime in seconds.",
        move |_| {
            let now = unix_now();
            Ok(json!({
                "now": ctime(now as i64),
                "up_since": ctime(m.started_unix() as i64),
                "uptime": m.uptime().as_secs(),
            }))
        },
    );
    router.register(
        "core.version",
        "The server's name, version and platform.",
        |_| Ok(json!(version())),
    );
    let m = metrics.clone();
    router.register(
        "core.stats",
        "The proxy's counters as an object: requests, responses, malformed, forwarded, local_replies, shard_messages (per shard of the core).",
        move |_| {
            let stats = m.proxy().stats();
            let shards: Vec<u64> = stats
                .shard_messages
                .get()
                .map(|s| s.iter().map(|n| n.load(Relaxed)).collect())
                .unwrap_or_default();
            Ok(json!({
                "requests": stats.requests.load(Relaxed),
                "responses": stats.responses.load(Relaxed),
                "malformed": stats.malformed.load(Relaxed),
                "forwarded": stats.forwarded.load(Relaxed),
                "local_replies": stats.local_replies.load(Relaxed),
                "shard_messages": shards,
            }))
        },
    );
    let m = metrics.clone();
    router.register(
        "stats.get_statistics",
        "Statistics as \"group:name = value\" lines. Params: names, each \"all\", \"group:\" or \"group:name\" (default all).",
        move |params| {
            let wanted = wanted_statistics(params)?;
            let all = statistics(&m);
            Ok(json!(
                all.iter()
                    .filter(|(name, _)| wanted.iter().any(|w| statistic_matches(w, name)))
                    .map(|(name, value)| format!("{name} = {value}"))
                    .collect::<Vec<_>>()
            ))
        },
    );
    let m = metrics.clone();
    router.register(
        "tenant.list",
        "Every tenant: policy, filter versions, counters and registrations by state.",
        move |_| Ok(Value::Array(tenant_list(&m))),
    );
    let m = metrics.clone();
    router.register(
        "status.get",
        "Everything the status page shows: version, uptime, totals, tenants, registrations by state, and the call and REGISTER rates of the last minutes.",
        move |_| {
            let stats = m.proxy().stats();
            let registrations = m.registration_counts().map(|counts| by_state(&counts, None));
            Ok(json!({
                "version": version(),
                "uptime": m.uptime().as_secs(),
                "calls": m.calls_total(),
                "registers_sent": m.registers_sent_total(),
                "sip": {
                    "requests": stats.requests.load(Relaxed),
                    "replies": stats.responses.load(Relaxed),
                    "malformed": stats.malformed.load(Relaxed),
                    "forwarded": stats.forwarded.load(Relaxed),
                    "local_replies": stats.local_replies.load(Relaxed),
                },
                "tenants": tenant_list(&m),
                "registrations": registrations,
                "rates": m.rate_points(),
            }))
        },
    );
    router.register(
        "status.registrations",
        "Registrations whose l_uuid, AOR or tenant contains the query (no secrets). Params: query?, limit? (at most 500).",
        move |params| {
            let query = param_str(params, 0, "query")?.unwrap_or_default();
            let limit = param_index(params, 1, "limit")?
                .unwrap_or(MAX_SEARCH)
                .min(MAX_SEARCH);
            let found = metrics
                .registration_source()
                .map(|source| source.search(&query, limit))
                .unwrap_or_default();
            serde_json::to_value(found).map_err(|e| RpcError::new(RpcError::SERVER, e.to_string()))
        },
    );
}

fn version() -> String {
    format!(
        "siphost {} ({}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every statistic as (`group:name`, value); the uac ones only with a registration source.
fn statistics(metrics: &HostMetrics) -> Vec<(String, u64)> {
    let stats = metrics.proxy().stats();
    let mut out = vec![
        (
            "core:rcv_requests".to_string(),
            stats.requests.load(Relaxed),
        ),
        (
            "core:rcv_replies".to_string(),
            stats.responses.load(Relaxed),
        ),
        (
            "core:fwd_requests".to_string(),
            stats.forwarded.load(Relaxed),
        ),
        (
            "core:bad_msg_hdr".to_string(),
            stats.malformed.load(Relaxed),
        ),
        (
            "sl:sent_replies".to_string(),
            stats.local_replies.load(Relaxed),
        ),
        ("siphost:calls".to_string(), metrics.calls_total()),
        (
            "siphost:registers_sent".to_string(),
            metrics.registers_sent_total(),
        ),
    ];
    if let Some(counts) = metrics.registration_counts() {
        for (name, value) in kamailio_totals(&counts) {
            out.push((format!("uac:{name}"), value));
        }
    }
    out
}

fn wanted_statistics(params: &Value) -> Result<Vec<String>, RpcError> {
    let items: Vec<&Value> = match params {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().collect(),
        Value::String(_) => vec![params],
        Value::Object(_) => param(params, 0, "names").into_iter().collect(),
        _ => return Err(RpcError::invalid_params("names must be strings")),
    };
    let mut names = Vec::new();
    for item in items {
        match item {
            Value::String(s) => names.push(s.clone()),
            Value::Array(inner) => {
                for v in inner {
                    let s = v
                        .as_str()
                        .ok_or_else(|| RpcError::invalid_params("names must be strings"))?;
                    names.push(s.to_string());
                }
            }
            _ => return Err(RpcError::invalid_params("names must be strings")),
        }
    }
    if names.is_empty() {
        names.push("all".into());
    }
    Ok(names)
}

/// Kamailio's selection: `all`, a whole group (`core:`), or one statistic.
fn statistic_matches(wanted: &str, name: &str) -> bool {
    wanted == "all"
        || wanted == name
        || (wanted.ends_with(':') && name.starts_with(wanted))
        || name
            .split_once(':')
            .is_some_and(|(_, short)| short == wanted)
}

fn by_state(counts: &[StateCount], tenant: Option<&str>) -> Value {
    let mut out = serde_json::Map::new();
    for state in RegistrationState::ALL {
        let n: u64 = counts
            .iter()
            .filter(|c| c.state == state && tenant.is_none_or(|t| c.tenant == t))
            .map(|c| c.count)
            .sum();
        out.insert(state.as_str().to_string(), json!(n));
    }
    Value::Object(out)
}

fn tenant_list(metrics: &HostMetrics) -> Vec<Value> {
    let Some(runtime) = metrics.runtime() else {
        return Vec::new();
    };
    let counts = metrics.registration_counts();
    runtime
        .tenants()
        .iter()
        .map(|tenant| {
            let c = &tenant.shared.counters;
            let [requests, replies, failure_calls] =
                metrics.tenant_hook_calls(tenant.name()).unwrap_or_default();
            let filters: Vec<Value> = tenant
                .filters
                .iter()
                .map(|slot| {
                    let version = slot.current.load();
                    json!({
                        "index": slot.index,
                        "path": version.path.display().to_string(),
                        "sha256": version.sha256,
                    })
                })
                .collect();
            json!({
                "name": tenant.name(),
                "policy": match tenant.policy {
                    crate::runtime::config::FailurePolicy::FailOpen => "fail-open",
                    crate::runtime::config::FailurePolicy::FailClosed => "fail-closed",
                },
                "filters": filters,
                "requests": requests,
                "replies": replies,
                "failure_calls": failure_calls,
                "filter_calls": c.calls.load(Relaxed),
                "traps": c.traps.load(Relaxed),
                "timeouts": c.timeouts.load(Relaxed),
                "out_of_memory": c.out_of_memory.load(Relaxed),
                "swaps": c.swaps.load(Relaxed),
                "failed_swaps": c.failed_swaps.load(Relaxed),
                "registrations": counts.as_ref().map(|c| by_state(c, Some(tenant.name()))),
            })
        })
        .collect()
}

/// `Sun Nov 29 13:07:26 2026`: C's ctime() in UTC, as Kamailio's core.uptime shows time.
fn ctime(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_c() {
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(1_795_957_646), "Sun Nov 29 13:07:26 2026");
        assert_eq!(ctime(951_782_400), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn statistics_are_selected_like_kamailio() {
        assert!(statistic_matches("all", "core:rcv_requests"));
        assert!(statistic_matches("core:", "core:rcv_requests"));
        assert!(!statistic_matches("uac:", "core:rcv_requests"));
        assert!(statistic_matches("uac:regtotal", "uac:regtotal"));
        assert!(statistic_matches("regtotal", "uac:regtotal"));
        assert!(!statistic_matches("reg", "uac:regtotal"));
        assert_eq!(wanted_statistics(&Value::Null), Ok(vec!["all".to_string()]));
        assert_eq!(
            wanted_statistics(&json!(["core:", "uac:regactive"])),
            Ok(vec!["core:".to_string(), "uac:regactive".to_string()])
        );
        assert!(wanted_statistics(&json!([1])).is_err());
    }

    #[test]
    fn uac_statistics_only_with_a_registration_source() {
        use crate::admin::registrations::{RegistrationSource, RegistrationSummary};
        struct Three;
        impl RegistrationSource for Three {
            fn counts(&self) -> Vec<StateCount> {
                [
                    (RegistrationState::Online, 2),
                    (RegistrationState::Disabled, 1),
                ]
                .map(|(state, count)| StateCount {
                    tenant: "t".into(),
                    state,
                    count,
                })
                .to_vec()
            }
            fn search(&self, _: &str, _: usize) -> Vec<RegistrationSummary> {
                Vec::new()
            }
        }
        let (handle, _rx) = crate::proxy::ProxyHandle::channel();
        let metrics = HostMetrics::new(handle, None, &[]);
        let mut router = Router::new();
        register(&mut router, metrics.clone());
        let ask = |names: Value| {
            router
                .dispatch(&json!({"jsonrpc": "2.0", "method": "stats.get_statistics", "params": names, "id": 1}))
                .expect("answer")["result"]
                .clone()
        };
        let all = ask(json!(["all"]));
        assert!(
            !all.to_string().contains("uac:"),
            "uac stats without a source: {all}"
        );
        assert!(all.to_string().contains("core:rcv_requests = 0"), "{all}");
        metrics.set_registration_source(Arc::new(Three));
        assert_eq!(
            ask(json!(["uac:"])),
            json!([
                "uac:regtotal = 3",
                "uac:regactive = 2",
                "uac:regdisabled = 1"
            ])
        );
    }
}
