//! The wasmtime host for filters: one sandbox per tenant, limits, failure
//! policy, hot swap; implements the proxy's `FilterHooks`.

pub mod config;
