//! Who may send: each tenant's access check (`crate::access`) run on a request before it
//! opens a transaction or reaches the filters.

use std::time::{SystemTime, UNIX_EPOCH};

use siphost_sip::Uri;

use super::*;
use crate::access::{AccessControl, Target, Verdict};
use crate::runtime::config::{ListenTransport, parse_listen};

impl Core {
    /// The tenant's access check: `None` when the request was answered or dropped here,
    /// else the identified endpoint (if any), with our realm's credentials removed from the
    /// request.
    pub(super) fn admit(
        &mut self,
        msg: &mut Message,
        source: &Source,
        reply_to: SocketAddr,
    ) -> Option<Option<String>> {
        let Some(access) = self.access.get_mut(&source.listener) else {
            return Some(None);
        };
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
                return Some(endpoint.map(|e| e.name.to_string()));
            }
            Verdict::Drop => return None,
            Verdict::Challenge(reply) | Verdict::Refuse(reply) => reply,
        };
        ProxyStats::bump(&self.stats.local_replies);
        self.send_to_source(*source, reply_to, reply.to_bytes());
        None
    }
}

/// Builds each tenant's access control and files it under the listeners the tenant owns.
pub(super) fn access_by_listener(
    config: &Config,
    listeners: &[Listener],
) -> Result<FxHashMap<usize, AccessControl>, ProxyError> {
    let mut by_listener = FxHashMap::default();
    for tenant in &config.tenant {
        let Some(access) = &tenant.access else {
            continue;
        };
        for entry in &tenant.listen {
            let (transport, address) =
                parse_listen(entry).map_err(|why| ProxyError::TenantListen {
                    tenant: tenant.name.clone(),
                    why,
                })?;
            let kind = match transport {
                ListenTransport::Udp => TransportKind::Udp,
                ListenTransport::Tcp => TransportKind::Tcp,
            };
            // One instance per listener: the UDP and TCP sockets of a tenant keep separate
            // replay tables and buckets, which only makes each smaller.
            let control =
                AccessControl::new(&tenant.name, access, rand::random()).map_err(|source| {
                    ProxyError::Access {
                        tenant: tenant.name.clone(),
                        source,
                    }
                })?;
            if let Some(i) = listeners
                .iter()
                .position(|l| l.kind == kind && l.local == address)
            {
                by_listener.insert(i, control);
            }
        }
    }
    Ok(by_listener)
}
