//! Who may send: each tenant's access check (`crate::access`) run on a request before it
//! opens a transaction or reaches the filters.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use siphost_sip::Uri;

use super::*;
use crate::access::table::{CredentialTables, TableCredentials};
use crate::access::{
    AccessControl, AccessCounters, ConfigCredentials, CredentialStore, Target, Verdict,
};
use crate::runtime::config::parse_listen;

impl Core {
    /// The tenant's access check: `None` when the request was answered or dropped here,
    /// else the identified endpoint (if any), with our realm's credentials removed from the
    /// request.
    pub(super) fn admit(
        &mut self,
        msg: &mut Message,
        source: &Source,
        reply_to: SocketAddr,
    ) -> Option<Option<Arc<str>>> {
        // A clone of the Arc, so the lock does not borrow the core while it replies.
        let Some(access) = self.access.get(&source.listener).cloned() else {
            return Some(None);
        };
        let mut access = access
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let target = match msg.request_uri().map(Uri::parse) {
            Some(Ok(uri)) if uri.user.is_none() && self.us.is_us(uri.host, uri.port) => {
                Target::Local
            }
            _ => Target::Relayed,
        };
        // Nonces carry wall-clock time so they stay checkable across restarts.
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let reply = match access.check(msg, source.remote, target, wall) {
            Verdict::Allow(endpoint) => {
                access.consume_credentials(msg);
                return Some(endpoint.map(|e| e.name));
            }
            Verdict::Drop => return None,
            Verdict::Challenge(reply) | Verdict::Refuse(reply) => reply,
        };
        drop(access);
        ProxyStats::bump(&self.stats.local_replies);
        self.send_to_source(*source, reply_to, reply.to_bytes());
        None
    }
}

/// Builds each tenant's access control and files it under the listeners the tenant owns.
pub(super) fn access_by_listener(
    config: &Config,
    listeners: &[Listener],
    stats: &ProxyStats,
    credentials: &CredentialTables,
) -> Result<SharedAccess, ProxyError> {
    let mut by_listener = FxHashMap::default();
    let mut counters_by_tenant = Vec::new();
    for tenant in &config.tenant {
        let Some(access) = &tenant.access else {
            continue;
        };
        let counters = Arc::new(AccessCounters::default());
        counters_by_tenant.push((tenant.name.clone(), counters.clone()));
        for entry in &tenant.listen {
            let (transport, address) =
                parse_listen(entry).map_err(|why| ProxyError::TenantListen {
                    tenant: tenant.name.clone(),
                    why,
                })?;
            let kind = TransportKind::from(transport);
            // One instance per listener: the UDP and TCP sockets of a tenant keep separate
            // replay tables and buckets, which only makes each smaller.
            let store: Box<dyn CredentialStore> = match &access.credentials {
                None => Box::new(ConfigCredentials::new(&access.endpoint)),
                Some(_) => {
                    let rows = credentials
                        .rows(&tenant.name)
                        .ok_or_else(|| ProxyError::CredentialsNotOpened(tenant.name.clone()))?;
                    Box::new(TableCredentials::new(&access.endpoint, rows))
                }
            };
            let control = AccessControl::with_store(&tenant.name, access, rand::random(), store)
                .map_err(|source| ProxyError::Access {
                    tenant: tenant.name.clone(),
                    source,
                })?
                .with_counters(counters.clone());
            if let Some(i) = listeners
                .iter()
                .position(|l| l.kind == kind && l.local == address)
            {
                by_listener.insert(i, Arc::new(std::sync::Mutex::new(control)));
            }
        }
    }
    // Already set when a second core shares these stats (tests); the first one's stay.
    let _ = stats.access.set(counters_by_tenant);
    Ok(by_listener)
}
