//! Stateful forwarding per RFC 3261 §16: Via, Max-Forwards, Record-Route, loose routing,
//! CANCEL, best-response selection, and the filter hook calls at each routing point.

mod core;
mod handle;
pub mod hooks;
pub mod routing;

pub use self::core::{MAX_SHARDS, Proxy, ProxyError};
pub use handle::{
    Answered, CommandReceiver, Origination, ProxyHandle, ProxyStats, ReplySink, SendError,
};

#[cfg(test)]
mod tests;
