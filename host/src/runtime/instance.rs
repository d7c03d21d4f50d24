//! The ABI-neutral face of a filter: what the chain, failure policy, limits and
//! hot swap need from an instance, so the component model is one implementation of it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use siphost_sip::{Bytes, Message};

use super::FilterError;
use super::state::{ReplyOrigin, TenantShared};
use crate::proxy::hooks::HookContext;
use crate::registrations::scheduler::Due;

/// Which handler export a chain run calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Request,
    Reply,
    Failure,
}

impl Hook {
    /// The export's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Request => "on-request",
            Hook::Reply => "on-reply",
            Hook::Failure => "on-failure",
        }
    }
}

/// The hooks a filter takes for every message (WIT `interest.need`). A hook
/// outside it reaches the filter only when the message's dialog or transaction
/// holds state the tenant's filters keep with the host (see `Tenant::wants`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest(u8);

impl Interest {
    pub const INITIAL_REQUESTS: Interest = Interest(1);
    pub const IN_DIALOG_REQUESTS: Interest = Interest(2);
    pub const REPLIES: Interest = Interest(4);
    pub const FAILURES: Interest = Interest(8);
    /// What a filter that declares nothing gets.
    pub const ALL: Interest = Interest(15);
    pub const NONE: Interest = Interest(0);

    pub fn bits(self) -> u8 {
        self.0
    }

    /// From stored bits; unknown bits are kept (they only widen the interest).
    pub fn from_bits(bits: u8) -> Interest {
        Interest(bits)
    }

    pub fn union(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    pub fn contains(self, other: Interest) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bit a hook call on `msg` needs.
    pub fn of(hook: Hook, msg: &Message) -> Interest {
        match hook {
            Hook::Request if msg.to_tag().is_some() => Interest::IN_DIALOG_REQUESTS,
            Hook::Request => Interest::INITIAL_REQUESTS,
            Hook::Reply => Interest::REPLIES,
            Hook::Failure => Interest::FAILURES,
        }
    }
}

/// What one filter asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Continue,
    Forward(String),
    Reply {
        code: u16,
        reason: String,
        headers: Vec<(String, String)>,
        /// Empty for none; a body's Content-Type is among `headers`.
        body: Bytes,
    },
    Drop,
    Resend(Option<String>),
}

/// One hook call as an instance sees it. The instance may edit `msg` and the
/// routing facts in `ctx` (`next_hop`, `record_route_params`); when the call
/// fails it leaves both as they were.
pub struct HookInput<'a> {
    pub hook: Hook,
    pub ctx: &'a mut HookContext,
    pub msg: &'a mut Message,
    /// The failure reply of `on-failure`; edits to it are discarded.
    pub failure_reply: Option<&'a mut Message>,
}

/// One live filter instance. A call that returns an error leaves the instance
/// unusable: the tenant drops it and takes a fresh one.
pub trait FilterInstance: Send {
    /// Runs a hook within the tenant's CPU and memory limits.
    fn hook(&mut self, input: &mut HookInput<'_>) -> Result<Action, FilterError>;
    /// A timer the filter set has fired.
    fn timer(&mut self, token: u64) -> Result<(), FilterError>;
    /// The final reply to a request the filter originated, from `origin` (`None`: the
    /// host's own 408 or 503).
    fn local_reply(
        &mut self,
        request_id: u64,
        reply: &mut Message,
        origin: Option<ReplyOrigin>,
    ) -> Result<(), FilterError>;
    /// The filter's own admin call; the inner error is the filter's answer.
    fn rpc(&mut self, method: &str, params: &str) -> Result<Result<String, String>, FilterError>;
    /// Remote registrations now due (`registration-handler.on-registration-due`).
    /// Only instances of factories that [`FilterFactory::handles_registrations`]
    /// are ever given them.
    fn registrations_due(&mut self, due: &[Due]) -> Result<(), FilterError>;
    /// The hooks the filter declared while it was configured.
    fn interest(&self) -> Interest {
        Interest::ALL
    }
}

/// What a new instance is given: its tenant, its place, its limits.
#[derive(Clone)]
pub struct InstanceSetup {
    pub shared: Arc<TenantShared>,
    /// Position of the filter in the tenant's chain.
    pub filter_index: usize,
    /// The tenant worker that owns the instance (timers and local replies go back to it).
    pub lane: usize,
    pub label: Arc<str>,
    pub config_json: Arc<str>,
    pub memory_bytes: usize,
    /// CPU time one call may use.
    pub cpu_limit: Duration,
}

/// A loaded filter version, ready to make instances.
pub trait FilterFactory: Send + Sync {
    /// A fresh instance, configured.
    fn instantiate(&self, setup: &InstanceSetup) -> Result<Box<dyn FilterInstance>, FilterError>;
    /// Whether its instances take remote registrations (the component
    /// exports `registration-handler`).
    fn handles_registrations(&self) -> bool;
}

/// Where a loaded filter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    Cache,
    Compiled,
}

/// A filter file, loaded.
pub struct Loaded {
    pub factory: Arc<dyn FilterFactory>,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    pub source: LoadSource,
}

/// Turns filter files into factories (one per filter ABI).
pub trait FilterLoader: Send + Sync {
    fn load(&self, path: &Path) -> Result<Loaded, FilterError>;
}
