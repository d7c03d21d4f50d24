//! UDP and TCP listeners, connection reuse, framing (RFC 3261 §18, RFC 3581).
