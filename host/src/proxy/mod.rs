//! Stateful forwarding per RFC 3261 §16.

pub mod hooks;
