//! JSON-RPC 2.0 over HTTP on loopback (Kamailio method names) and its client.
