//! The host's Prometheus metrics: one registry, owned by the host and shared as an `Arc`.
//! Existing counters (proxy, tenants) are read at scrape time; the hook door and feeds add theirs.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::registrations::{RegistrationSource, StateCount};
use super::status::RateHistory;
use crate::access::AccessCounters;
use crate::proxy::ProxyHandle;
use crate::proxy::hooks::{FilterHooks, HookCall, HookContext, HookDone, HookResult, Submitted};
use crate::runtime::Runtime;
use crate::runtime::config::{ListenTransport, TenantConfig, parse_listen};
use crate::runtime::state::MetricValue;

/// The content type of [`HostMetrics::encode`] (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type TenantLabel = [(&'static str, String); 1];
type HookLabels = [(&'static str, String); 2];
type HistogramFamily = Family<HookLabels, Histogram, fn() -> Histogram>;

/// 10 µs to ~0.7 s, ×4 per bucket: a hook call is µs when healthy and hits
/// the CPU limit (tens of ms) when not.
fn hook_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 4.0, 9))
}

/// The three hooks a call goes through, as label values.
const HOOKS: [&str; 3] = ["request", "reply", "failure"];

/// Counters and histograms of one tenant's hook door, cloned out of the
/// families once so the message path takes no lock to find them.
#[derive(Clone)]
struct TenantDoor {
    name: String,
    /// Calls by hook (index into [`HOOKS`]).
    calls: [Counter; 3],
    latency: [Histogram; 3],
    overloaded: Counter,
}

/// The host's metrics registry and the views the admin methods read.
pub struct HostMetrics {
    registry: Registry,
    view: Arc<HostView>,
    doors: Vec<TenantDoor>,
    sockets: Vec<((ListenTransport, SocketAddr), usize)>,
    history: Mutex<RateHistory>,
}

/// What is read at scrape time: the proxy's and the runtime's own atomics,
/// and the registration source once the registration room sets it.
struct HostView {
    started: Instant,
    started_unix: f64,
    proxy: ProxyHandle,
    runtime: Option<Arc<Runtime>>,
    registrations: RwLock<Option<Arc<dyn RegistrationSource>>>,
}

impl std::fmt::Debug for HostView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostView")
            .field("started_unix", &self.started_unix)
            .finish_non_exhaustive()
    }
}

impl HostMetrics {
    /// The registry of a host with this proxy, this runtime (none without
    /// tenants) and these tenants.
    pub fn new(
        proxy: ProxyHandle,
        runtime: Option<Arc<Runtime>>,
        tenants: &[TenantConfig],
    ) -> Arc<Self> {
        let mut registry = Registry::default();
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let view = Arc::new(HostView {
            started: Instant::now(),
            started_unix,
            proxy,
            runtime,
            registrations: RwLock::new(None),
        });
        registry.register_collector(Box::new(view.clone()));

        let hook_calls = Family::<HookLabels, Counter>::default();
        registry.register(
            "siphost_filter_hook_calls",
            "Messages handed to a tenant's filter chain, by hook (request, reply, failure)",
            hook_calls.clone(),
        );
        let latency = HistogramFamily::new_with_constructor(hook_histogram);
        registry.register(
            "siphost_filter_hook_duration_seconds",
            "Time from handing a message to a tenant's filters until their decision, by hook",
            latency.clone(),
        );
        let overloaded = Family::<TenantLabel, Counter>::default();
        registry.register(
            "siphost_filter_overloaded",
            "Messages a tenant's filters refused because their queue was full",
            overloaded.clone(),
        );

        let mut doors = Vec::with_capacity(tenants.len());
        let mut sockets = Vec::new();
        for tenant in tenants {
            let hook = |i: usize| [("tenant", tenant.name.clone()), ("hook", HOOKS[i].into())];
            let label = [("tenant", tenant.name.clone())];
            doors.push(TenantDoor {
                name: tenant.name.clone(),
                calls: [0, 1, 2].map(|i| hook_calls.get_or_create_owned(&hook(i))),
                latency: [0, 1, 2].map(|i| latency.get_or_create_owned(&hook(i))),
                overloaded: overloaded.get_or_create_owned(&label),
            });
            // Present from the start, so a rate over them needs no first event.
            for entry in &tenant.listen {
                if let Ok(socket) = parse_listen(entry) {
                    sockets.push((socket, doors.len() - 1));
                }
            }
        }
        Arc::new(Self {
            registry,
            view,
            doors,
            sockets,
            history: Mutex::new(RateHistory::default()),
        })
    }

    /// The registry in OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Wraps the proxy's hooks so every call through the door is counted and timed.
    pub fn meter_hooks(self: &Arc<Self>, inner: Arc<dyn FilterHooks>) -> Arc<dyn FilterHooks> {
        Arc::new(MeteredHooks {
            inner,
            metrics: self.clone(),
        })
    }

    /// Gives the scrape, the RPC and the page the registration store's view.
    pub fn set_registration_source(&self, source: Arc<dyn RegistrationSource>) {
        *self
            .view
            .registrations
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The registration source's counts; `None` until one is set.
    pub fn registration_counts(&self) -> Option<Vec<StateCount>> {
        self.view.registration_source().map(|s| s.counts())
    }

    pub fn registration_source(&self) -> Option<Arc<dyn RegistrationSource>> {
        self.view.registration_source()
    }

    pub fn proxy(&self) -> &ProxyHandle {
        &self.view.proxy
    }

    pub fn runtime(&self) -> Option<&Arc<Runtime>> {
        self.view.runtime.as_ref()
    }

    pub fn uptime(&self) -> Duration {
        self.view.started.elapsed()
    }

    /// Start time in seconds since the Unix epoch.
    pub fn started_unix(&self) -> f64 {
        self.view.started_unix
    }

    /// Initial INVITEs seen so far.
    pub fn calls_total(&self) -> u64 {
        self.view.proxy.stats().calls.load(Relaxed)
    }

    /// REGISTERs sent so far, all tenants.
    pub fn registers_sent_total(&self) -> u64 {
        self.view.runtime.as_ref().map_or(0, |runtime| {
            runtime
                .tenants()
                .iter()
                .map(|t| t.shared.counters.registers_sent.load(Relaxed))
                .sum()
        })
    }

    /// Door counts of one tenant: (requests, replies, failure calls).
    pub fn tenant_hook_calls(&self, tenant: &str) -> Option<[u64; 3]> {
        let door = self.doors.iter().find(|d| d.name == tenant)?;
        Some(door.calls.clone().map(|c| c.get()))
    }

    /// Records one sample of the totals the status chart plots.
    pub fn sample_rates(&self, at_unix_s: f64) {
        let (calls, registers) = (self.calls_total(), self.registers_sent_total());
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(at_unix_s, calls, registers);
    }

    /// The chart's points: per-second rates between consecutive samples.
    pub fn rate_points(&self) -> Vec<super::status::RatePoint> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .points()
    }

    fn door_for(&self, call: &HookCall) -> Option<&TenantDoor> {
        let ctx = call.ctx();
        let transport = ListenTransport::from_name(ctx.transport)?;
        let (_, index) = self
            .sockets
            .iter()
            .find(|(socket, _)| *socket == (transport, ctx.local))?;
        self.doors.get(*index)
    }
}

impl HostView {
    fn registration_source(&self) -> Option<Arc<dyn RegistrationSource>> {
        self.registrations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Encodes one family of constant values; `samples` yields label sets and values.
fn encode_counters<const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = ([(&'static str, String); N], u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_gauges<const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = ([(&'static str, String); N], i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `[tenant.access]`'s decisions per tenant: every check in exactly one `outcome`, and
/// the reasons behind them as `event`s.
fn encode_access(
    encoder: &mut DescriptorEncoder<'_>,
    tenants: &[(String, Arc<AccessCounters>)],
) -> Result<(), std::fmt::Error> {
    encode_counters(
        encoder,
        "siphost_access_requests",
        "Requests checked by a tenant's access control, by outcome (allowed, challenged: \
         401/407 sent, refused: 403 sent, dropped)",
        tenants.iter().flat_map(|(tenant, c)| {
            [
                ("allowed", &c.allowed),
                ("challenged", &c.challenged),
                ("refused", &c.refused),
                ("dropped", &c.dropped),
            ]
            .map(|(outcome, n)| {
                (
                    [("tenant", tenant.clone()), ("outcome", outcome.to_string())],
                    n.load(Relaxed),
                )
            })
        }),
    )?;
    encode_counters(
        encoder,
        "siphost_access_events",
        "Why access control refused, dropped or challenged, by event (unidentified: no \
         endpoint claimed the request; auth_failed: wrong credentials; stale: right answer \
         on an expired nonce; replayed: a nonce count used again; rate_limited: the source's \
         bucket was empty)",
        tenants.iter().flat_map(|(tenant, c)| {
            [
                ("unidentified", &c.unidentified),
                ("auth_failed", &c.auth_failed),
                ("stale", &c.stale),
                ("replayed", &c.replays),
                ("rate_limited", &c.rate_limited),
            ]
            .map(|(event, n)| {
                (
                    [("tenant", tenant.clone()), ("event", event.to_string())],
                    n.load(Relaxed),
                )
            })
        }),
    )
}

impl Collector for HostView {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let start = encoder.encode_descriptor(
            "siphost_start_time_seconds",
            "When this host started, in seconds since the Unix epoch",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.started_unix).encode(start)?;

        let stats = self.proxy.stats();
        for (name, help, counter) in [
            (
                "siphost_calls",
                "Initial INVITEs (no To tag) received",
                &stats.calls,
            ),
            (
                "siphost_sip_requests",
                "SIP requests received (retransmissions and ACKs included)",
                &stats.requests,
            ),
            (
                "siphost_sip_replies",
                "SIP replies received",
                &stats.responses,
            ),
            (
                "siphost_sip_malformed",
                "Messages that failed to parse (answered 400 when possible, else dropped)",
                &stats.malformed,
            ),
            (
                "siphost_transactions_forwarded",
                "Requests forwarded: one per client transaction started or stateless forward",
                &stats.forwarded,
            ),
            (
                "siphost_transactions_local_replies",
                "Replies the proxy generated itself (errors, filter replies)",
                &stats.local_replies,
            ),
        ] {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(counter.load(Relaxed)).encode(family)?;
        }

        if let Some(access) = stats.access.get() {
            encode_access(&mut encoder, access)?;
        }
        if let Some(shards) = stats.shard_messages.get() {
            encode_counters(
                &mut encoder,
                "siphost_proxy_shard_messages",
                "SIP messages each shard of the proxy core handled (calls are placed by Call-ID)",
                shards
                    .iter()
                    .enumerate()
                    .map(|(i, n)| ([("shard", i.to_string())], n.load(Relaxed))),
            )?;
        }

        if let Some(runtime) = &self.runtime {
            let tenants = runtime.tenants();
            let label = |t: &crate::runtime::Tenant| [("tenant", t.name().to_string())];
            encode_counters(
                &mut encoder,
                "siphost_uac_register_sent",
                "REGISTERs sent for remote registrations (answers to challenges included)",
                tenants
                    .iter()
                    .map(|t| (label(t), t.shared.counters.registers_sent.load(Relaxed))),
            )?;
            encode_counters(
                &mut encoder,
                "siphost_uac_register_failed",
                "Remote registration attempts that failed",
                tenants.iter().map(|t| {
                    (
                        label(t),
                        t.shared.counters.registration_failures.load(Relaxed),
                    )
                }),
            )?;
            encode_counters(
                &mut encoder,
                "siphost_filter_calls",
                "Filter invocations (one per filter of the chain per message)",
                tenants
                    .iter()
                    .map(|t| (label(t), t.shared.counters.calls.load(Relaxed))),
            )?;
            encode_counters(
                &mut encoder,
                "siphost_filter_failures",
                "Filter calls that failed, by kind (trap, timeout, out_of_memory, instantiate)",
                tenants.iter().flat_map(|t| {
                    let c = &t.shared.counters;
                    [
                        ("trap", &c.traps),
                        ("timeout", &c.timeouts),
                        ("out_of_memory", &c.out_of_memory),
                        ("instantiate", &c.instantiate_errors),
                    ]
                    .map(|(kind, n)| {
                        (
                            [("tenant", t.name().to_string()), ("kind", kind.to_string())],
                            n.load(Relaxed),
                        )
                    })
                }),
            )?;
            encode_counters(
                &mut encoder,
                "siphost_filter_instantiations",
                "Filter instances created (start, after a failure, swap, restart)",
                tenants
                    .iter()
                    .map(|t| (label(t), t.shared.counters.instantiations.load(Relaxed))),
            )?;
            encode_counters(
                &mut encoder,
                "siphost_filter_swaps",
                "Hot swaps of a filter version, by outcome (ok, failed: the old version stayed)",
                tenants.iter().flat_map(|t| {
                    let c = &t.shared.counters;
                    [("ok", &c.swaps), ("failed", &c.failed_swaps)].map(|(outcome, n)| {
                        (
                            [
                                ("tenant", t.name().to_string()),
                                ("outcome", outcome.to_string()),
                            ],
                            n.load(Relaxed),
                        )
                    })
                }),
            )?;
            // What the filters count themselves (the WIT `metrics` import, e.g. the uac
            // filter's uac_req_sent or uac_auth_answered), by tenant and the filter's name.
            let defined: Vec<(String, Vec<(String, MetricValue)>)> = tenants
                .iter()
                .map(|t| (t.name().to_string(), t.shared.metrics.snapshot()))
                .collect();
            encode_counters(
                &mut encoder,
                "siphost_filter_metric",
                "Counters the tenant's filters define (WIT metrics.counter-add), by name",
                defined.iter().flat_map(|(tenant, values)| {
                    values.iter().filter_map(move |(name, value)| match value {
                        MetricValue::Counter(n) => {
                            Some(([("tenant", tenant.clone()), ("name", name.clone())], *n))
                        }
                        MetricValue::Gauge(_) => None,
                    })
                }),
            )?;
            encode_gauges(
                &mut encoder,
                "siphost_filter_gauge",
                "Gauges the tenant's filters define (WIT metrics.gauge-set), by name",
                defined.iter().flat_map(|(tenant, values)| {
                    values.iter().filter_map(move |(name, value)| match value {
                        MetricValue::Gauge(n) => {
                            Some(([("tenant", tenant.clone()), ("name", name.clone())], *n))
                        }
                        MetricValue::Counter(_) => None,
                    })
                }),
            )?;
            encode_gauges(
                &mut encoder,
                "siphost_filter_info",
                "The filter version running at each place of a tenant's chain (value 1)",
                tenants.iter().flat_map(|t| {
                    t.filters.iter().map(|slot| {
                        (
                            [
                                ("tenant", t.name().to_string()),
                                ("filter", slot.index.to_string()),
                                ("sha256", slot.current.load().sha256.clone()),
                            ],
                            1,
                        )
                    })
                }),
            )?;
        }

        if let Some(source) = self.registration_source() {
            encode_gauges(
                &mut encoder,
                "siphost_uac_registrations",
                "Remote registrations by tenant and state (online, ongoing, offline, disabled)",
                source.counts().into_iter().map(|c| {
                    (
                        [
                            ("tenant", c.tenant),
                            ("state", c.state.as_str().to_string()),
                        ],
                        i64::try_from(c.count).unwrap_or(i64::MAX),
                    )
                }),
            )?;
        }
        Ok(())
    }
}

/// The proxy's hooks with every call counted and timed at the door, by tenant.
struct MeteredHooks {
    inner: Arc<dyn FilterHooks>,
    metrics: Arc<HostMetrics>,
}

impl FilterHooks for MeteredHooks {
    fn applies(&self, transport: &str, local: SocketAddr) -> bool {
        self.inner.applies(transport, local)
    }

    fn transaction_ended(&self, ctx: &HookContext, dialog_over: bool) {
        self.inner.transaction_ended(ctx, dialog_over);
    }

    fn submit(&self, call: HookCall, done: HookDone) -> Submitted {
        let Some(door) = self.metrics.door_for(&call) else {
            return self.inner.submit(call, done);
        };
        let hook = match &call {
            HookCall::Request { .. } => 0,
            HookCall::Reply { .. } => 1,
            HookCall::Failure { .. } => 2,
        };
        let latency = door.latency[hook].clone();
        let started = Instant::now();
        let timed: HookDone = Box::new(move |result: HookResult| {
            latency.observe(started.elapsed().as_secs_f64());
            done(result);
        });
        let submitted = self.inner.submit(call, timed);
        match submitted {
            // No filter needed the message: it never went through the door.
            Submitted::NoFilter(_) => {}
            Submitted::Queued => {
                door.calls[hook].inc();
            }
            Submitted::Decided(_) => {
                door.calls[hook].inc();
                door.latency[hook].observe(started.elapsed().as_secs_f64());
            }
            Submitted::Overloaded(_) => {
                door.calls[hook].inc();
                door.overloaded.inc();
            }
        }
        submitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::registrations::{RegistrationState, RegistrationSummary};

    struct TwoTenants;

    impl RegistrationSource for TwoTenants {
        fn counts(&self) -> Vec<StateCount> {
            vec![
                StateCount {
                    tenant: "a".into(),
                    state: RegistrationState::Online,
                    count: 7,
                },
                StateCount {
                    tenant: "b".into(),
                    state: RegistrationState::Disabled,
                    count: 2,
                },
            ]
        }
        fn search(&self, _: &str, _: usize) -> Vec<RegistrationSummary> {
            Vec::new()
        }
    }

    #[test]
    fn families_are_named_siphost_and_feeds_show_up() {
        let (handle, _commands) = ProxyHandle::channel();
        let config = crate::config::Config::parse(
            "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5999\"\n\
             [[tenant]]\nname = \"a\"\nlisten = [\"udp:127.0.0.1:5999\"]\n",
        )
        .expect("config");
        let tenants = config.tenant;
        let metrics = HostMetrics::new(handle, None, &tenants);
        let before = metrics.encode().expect("encode");
        assert!(!before.contains("siphost_uac_registrations"), "{before}");
        // REGISTER counts come from the runtime's tenants: none without one.
        assert!(!before.contains("siphost_uac_register_sent"), "{before}");
        assert_eq!(metrics.registers_sent_total(), 0);
        metrics.set_registration_source(Arc::new(TwoTenants));
        let text = metrics.encode().expect("encode");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(rest.starts_with("siphost_"), "{line}");
            }
        }
        assert!(text.contains("siphost_uac_registrations{tenant=\"a\",state=\"online\"} 7"));
        assert!(text.contains("siphost_uac_registrations{tenant=\"b\",state=\"disabled\"} 2"));
    }

    /// Hooks with a filter on one socket only.
    struct OneSocket;

    impl FilterHooks for OneSocket {
        fn applies(&self, _transport: &str, local: SocketAddr) -> bool {
            local.port() == 5999
        }
        fn submit(&self, call: HookCall, _done: HookDone) -> Submitted {
            Submitted::NoFilter(call)
        }
    }

    #[test]
    fn metering_keeps_sockets_without_filters_off_the_door() {
        let (handle, _commands) = ProxyHandle::channel();
        let metrics = HostMetrics::new(handle.clone(), None, &[]);
        let hooks = metrics.meter_hooks(Arc::new(OneSocket));
        assert!(hooks.applies("udp", "127.0.0.1:5999".parse().expect("addr")));
        // The proxy then goes on without building a call for the filters at all.
        assert!(!hooks.applies("udp", "127.0.0.1:5060".parse().expect("addr")));
        // Calls are the proxy's own count, whichever socket they came on.
        handle.stats().calls.fetch_add(3, Relaxed);
        assert_eq!(metrics.calls_total(), 3);
        assert!(
            metrics
                .encode()
                .expect("encode")
                .contains("siphost_calls_total 3")
        );
    }
}
