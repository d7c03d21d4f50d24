//! siphost: a stateful SIP proxy whose per-tenant logic runs as sandboxed
//! WebAssembly filters. Data flows one way: socket → transport → codec →
//! transaction → proxy → filter hooks → proxy → transaction → transport.

pub use siphost_sip as sip;
pub use siphost_transaction as transaction;

pub mod access;
pub mod admin;
pub mod config;
pub mod proxy;
pub mod registrations;
pub mod runtime;
pub mod transport;
