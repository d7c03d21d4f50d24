//! `[[tenant]]` sections of the host configuration: which traffic belongs to
//! a tenant, its sandbox limits and failure policy, and its filter chain.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// One tenant: which traffic is theirs and which filters it passes through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Unique name, used by `siphost rpc filter.reload <name>` and in logs.
    pub name: String,
    /// Local sockets whose traffic belongs to this tenant, as
    /// `"<transport>:<ip>:<port>"` (e.g. `"udp:127.0.0.1:5070"`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// What happens to a message when a filter traps, times out or runs out
    /// of memory.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Linear memory ceiling of each filter instance, in MiB.
    #[serde(default = "default_memory_limit_mib")]
    pub memory_limit_mib: u32,
    /// CPU time one hook call may take, in milliseconds (checked every epoch tick, 5 ms).
    #[serde(default = "default_cpu_limit_ms")]
    pub cpu_limit_ms: u32,
    /// The filter chain, run in order.
    #[serde(default)]
    pub filter: Vec<FilterConfig>,
    /// The tenant's remote-registration store (`[tenant.registrations]`).
    #[serde(default)]
    pub registrations: Option<crate::registrations::RegistrationsConfig>,
    /// Who may send through this tenant (`[tenant.access]`, see `crate::access`).
    #[serde(default)]
    pub access: Option<crate::access::config::AccessConfig>,
    /// Worker threads running this tenant's filter calls, each with its own
    /// instance of every filter; one dialog's calls always go to the same one.
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Requests waiting for or in this tenant's filters beyond which new
    /// requests are answered 503 with Retry-After (replies are never refused).
    #[serde(default = "default_queue_limit")]
    pub queue_limit: u32,
    /// Whether a hook call that finds its worker idle may run on the proxy's
    /// thread, once the tenant's filters have shown only fast calls
    /// (`runtime::inline`); `false` keeps every call on the workers.
    #[serde(default = "default_inline_hooks")]
    pub inline_hooks: bool,
}

/// One filter of a tenant's chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Path of the wasm component (`wasm32-wasip2`).
    pub path: PathBuf,
    /// Handed to the filter's `configure` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// When set, the file's modification time is polled at this interval and
    /// a change hot-swaps the filter.
    #[serde(default)]
    pub watch_ms: Option<u64>,
}

/// What the host does with a message whose filter failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// The message goes on as if the failed filter were not there.
    #[default]
    FailOpen,
    /// Requests are answered 500 (an ACK is dropped), replies dropped; in
    /// `on_failure` the failed filter is skipped and the failure reply goes
    /// upstream as it is.
    FailClosed,
}

fn default_memory_limit_mib() -> u32 {
    16
}

fn default_cpu_limit_ms() -> u32 {
    50
}

fn default_workers() -> u32 {
    1
}

fn default_queue_limit() -> u32 {
    1000
}

fn default_inline_hooks() -> bool {
    true
}

/// Most workers one tenant may have.
pub const MAX_WORKERS: u32 = 64;

/// Transport of a tenant listen entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenTransport {
    Udp,
    Tcp,
}

impl ListenTransport {
    /// Parses the transport names the proxy uses in `HookContext::transport`.
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("udp") {
            Some(Self::Udp)
        } else if name.eq_ignore_ascii_case("tcp") {
            Some(Self::Tcp)
        } else {
            None
        }
    }
}

impl From<ListenTransport> for crate::config::TransportKind {
    fn from(transport: ListenTransport) -> Self {
        match transport {
            ListenTransport::Udp => Self::Udp,
            ListenTransport::Tcp => Self::Tcp,
        }
    }
}

/// Parses a listen entry such as `"udp:127.0.0.1:5070"` or `"tcp:[::1]:5070"`.
pub fn parse_listen(entry: &str) -> Result<(ListenTransport, SocketAddr), String> {
    let (transport, address) = entry
        .split_once(':')
        .ok_or_else(|| format!("{entry:?}: expected \"<udp|tcp>:<ip>:<port>\""))?;
    let transport = ListenTransport::from_name(transport)
        .ok_or_else(|| format!("{entry:?}: unknown transport {transport:?}"))?;
    let address = address
        .parse::<SocketAddr>()
        .map_err(|e| format!("{entry:?}: bad address: {e}"))?;
    Ok((transport, address))
}

/// Checks a tenant list: names unique and non-empty, listen entries valid and
/// owned by one tenant only, limits non-zero, filter configs representable as
/// JSON. Errors name the key path, e.g. `tenant[1].listen[0]: ...`.
pub fn validate_tenants(tenants: &[TenantConfig]) -> Result<(), String> {
    let mut names = HashSet::new();
    let mut sockets = HashSet::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let at = format!("tenant[{i}]");
        if tenant.name.trim().is_empty() {
            return Err(format!("{at}.name: must not be empty"));
        }
        if !names.insert(tenant.name.as_str()) {
            return Err(format!("{at}.name: duplicate tenant {:?}", tenant.name));
        }
        for (j, entry) in tenant.listen.iter().enumerate() {
            let socket = parse_listen(entry).map_err(|e| format!("{at}.listen[{j}]: {e}"))?;
            if !sockets.insert(socket) {
                return Err(format!(
                    "{at}.listen[{j}]: {entry:?} already belongs to another tenant"
                ));
            }
        }
        if tenant.memory_limit_mib == 0 {
            return Err(format!("{at}.memory_limit_mib: must be at least 1"));
        }
        if tenant.cpu_limit_ms == 0 {
            return Err(format!("{at}.cpu_limit_ms: must be at least 1"));
        }
        if let Some(registrations) = &tenant.registrations {
            registrations
                .validate()
                .map_err(|(key, why)| format!("{at}.registrations.{key}: {why}"))?;
        }
        if tenant.workers == 0 || tenant.workers > MAX_WORKERS {
            return Err(format!("{at}.workers: must be 1 to {MAX_WORKERS}"));
        }
        if tenant.queue_limit == 0 {
            return Err(format!("{at}.queue_limit: must be at least 1"));
        }
        for (j, filter) in tenant.filter.iter().enumerate() {
            filter
                .config_json()
                .map_err(|e| format!("{at}.filter[{j}].config: {e}"))?;
            if filter.watch_ms == Some(0) {
                return Err(format!("{at}.filter[{j}].watch_ms: must be at least 1"));
            }
        }
        if let Some(access) = &tenant.access {
            access.validate().map_err(|e| format!("{at}.{e}"))?;
        }
        crate::access::config::check_tenant_identification(tenant, tenant.registrations.is_some())
            .map_err(|e| format!("{at}.{e}"))?;
    }
    Ok(())
}

impl FilterConfig {
    /// The `config` table as the JSON text given to `configure`.
    pub fn config_json(&self) -> Result<String, String> {
        serde_json::to_string(&self.config).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<TenantConfig>, String> {
        #[derive(Deserialize)]
        struct Doc {
            tenant: Vec<TenantConfig>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        validate_tenants(&doc.tenant)?;
        Ok(doc.tenant)
    }

    #[test]
    fn defaults_and_config_table_become_json() {
        let tenants = parse(
            r#"
            [[tenant]]
            name = "acme"
            listen = ["udp:127.0.0.1:5070"]
            [[tenant.filter]]
            path = "f.wasm"
            config = { realm = "x", n = 3 }
            "#,
        )
        .expect("valid config");
        assert_eq!(tenants[0].failure_policy, FailurePolicy::FailOpen);
        assert_eq!(tenants[0].memory_limit_mib, 16);
        assert_eq!(tenants[0].cpu_limit_ms, 50);
        assert_eq!(tenants[0].workers, 1);
        assert_eq!(tenants[0].queue_limit, 1000);
        let json: serde_json::Value =
            serde_json::from_str(&tenants[0].filter[0].config_json().expect("json"))
                .expect("parse");
        assert_eq!(json, serde_json::json!({"realm": "x", "n": 3}));
    }

    #[test]
    fn unknown_keys_and_bad_entries_are_rejected() {
        assert!(parse("[[tenant]]\nname = \"a\"\ncolour = 1\n").is_err());
        assert!(parse("[[tenant]]\nname = \"a\"\nfailure_policy = \"maybe\"\n").is_err());
        let err = parse("[[tenant]]\nname = \"a\"\nlisten = [\"sctp:127.0.0.1:1\"]\n")
            .expect_err("bad transport");
        assert!(err.starts_with("tenant[0].listen[0]"), "{err}");
        let err = parse(
            "[[tenant]]\nname = \"a\"\nlisten = [\"udp:127.0.0.1:1\"]\n[[tenant]]\nname = \"b\"\nlisten = [\"udp:127.0.0.1:1\"]\n",
        )
        .expect_err("shared socket");
        assert!(err.starts_with("tenant[1].listen[0]"), "{err}");
        assert!(parse("[[tenant]]\nname = \"a\"\n[[tenant]]\nname = \"a\"\n").is_err());
        assert!(parse("[[tenant]]\nname = \"a\"\ncpu_limit_ms = 0\n").is_err());
        let err = parse("[[tenant]]\nname = \"a\"\nworkers = 0\n").expect_err("no workers");
        assert!(err.starts_with("tenant[0].workers"), "{err}");
        let err = parse("[[tenant]]\nname = \"a\"\nqueue_limit = 0\n").expect_err("no queue");
        assert!(err.starts_with("tenant[0].queue_limit"), "{err}");
    }

    #[test]
    fn registrations_section_is_optional_and_validated() {
        let tenants = parse(
            "[[tenant]]\nname = \"a\"\n[tenant.registrations]\ndb_url = \"sqlite:///tmp/uac.db\"\n\
             [[tenant.access.endpoint]]\nname = \"pbx\"\nsource = [\"127.0.0.1/32\"]\n",
        )
        .expect("valid");
        let registrations = tenants[0].registrations.as_ref().expect("section");
        assert_eq!(registrations.table, "uacreg");
        // A registration store holds credentials: no identification, no start.
        let err = parse(
            "[[tenant]]\nname = \"a\"\n[tenant.registrations]\ndb_url = \"sqlite:///tmp/uac.db\"\n",
        )
        .expect_err("unidentified");
        assert!(err.starts_with("tenant[0]."), "{err}");
        let err =
            parse("[[tenant]]\nname = \"a\"\n[tenant.registrations]\ndb_url = \"oracle://x\"\n")
                .expect_err("bad url");
        assert!(err.starts_with("tenant[0].registrations.db_url: "), "{err}");
    }

    #[test]
    fn listen_entries_parse_v4_and_v6() {
        assert_eq!(
            parse_listen("tcp:[::1]:5070"),
            Ok((ListenTransport::Tcp, "[::1]:5070".parse().expect("addr")))
        );
        assert!(parse_listen("udp:localhost:5070").is_err());
    }
}
