//! What the uac logic needs from its surroundings: a SIP message to read and edit, and
//! host services (dialog/transaction variables, log, counters, randomness).
//! The wasm glue implements these over the WIT imports; tests implement them over plain structs.

/// Log levels, as the host's log interface has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A SIP request or reply the filter reads and edits. Header names are case-insensitive and
/// compact forms are understood (the host's message does that).
pub trait SipMessage {
    fn is_request(&self) -> bool;
    /// Request method; `None` for a reply.
    fn method(&self) -> Option<String>;
    fn request_uri(&self) -> Option<String>;
    /// Status code of a reply; `None` for a request.
    fn status(&self) -> Option<u16>;
    fn reason(&self) -> Option<String>;
    /// First header line of that name, value only.
    fn header(&self, name: &str) -> Option<String>;
    /// Every header line of that name, values in message order (several challenges).
    fn headers(&self, name: &str) -> Vec<String>;
    /// The message body (auth-int hashes it).
    fn body(&self) -> Vec<u8>;
    /// Replace every line of that name by one line with this value.
    fn set_header(&mut self, name: &str, value: &str);
    /// Add a header line after the existing ones.
    fn add_header(&mut self, name: &str, value: &str);
    /// Remove every line of that name; returns how many were removed.
    fn remove_header(&mut self, name: &str) -> u32;
    /// Parameters the host appends after `;lr` to the Record-Route it inserts; `None` when
    /// it does not record-route this request.
    fn record_route_params(&self) -> Option<String>;
    /// Set them; `Some("")` forces record-routing, `None` prevents it.
    fn set_record_route_params(&mut self, params: Option<&str>);
    /// Source address as "ip:port" (IPv6 in brackets).
    fn source(&self) -> String;
    /// Replace the Request-URI (`$ru`; requests only).
    fn set_request_uri(&mut self, uri: &str);
    /// Choose the next hop (`$du`, a SIP URI).
    fn set_next_hop(&mut self, uri: &str);
    /// The endpoint the host's access control identified the request as (`$endpoint`);
    /// the same for the replies of that request.
    fn endpoint(&self) -> Option<String>;
}

/// Host services that outlive one message.
pub trait HostState {
    fn dialog_get(&self, dialog: &str, name: &str) -> Option<String>;
    fn dialog_set(&mut self, dialog: &str, name: &str, value: Option<&str>) -> Result<(), String>;
    fn transaction_get(&self, transaction: &str, name: &str) -> Option<String>;
    fn transaction_set(
        &mut self,
        transaction: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), String>;
    fn log(&mut self, level: Level, message: &str);
    fn counter_add(&mut self, name: &str, value: u64);
    /// Fill `buf` with unpredictable bytes (AEAD nonces).
    fn random_bytes(&mut self, buf: &mut [u8]);
    /// The tenant's remote registrations (the uac_reg_* functions); `None` where the
    /// host offers none.
    fn registrations(&mut self) -> Option<&mut dyn crate::reg::store::RegistrationStore>;

    /// Send a request in its own client transaction (WIT `transport.send-request`); its
    /// final reply comes back to [`crate::uac::Uac::on_local_reply`] with the returned id.
    /// A host without a transport refuses.
    fn send_request(&mut self, request: &OutgoingRequest) -> Result<u64, String> {
        Err(format!(
            "this host cannot send requests ({} not sent)",
            request.method
        ))
    }
}

/// A request the filter originates (`uac_req_send`). The host adds Via, Max-Forwards and
/// Content-Length; From, To, Call-ID and CSeq are among `headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    pub method: String,
    pub request_uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send there instead of the Request-URI (a SIP URI).
    pub next_hop: Option<String>,
    /// Kamailio's fr_timeout: wait this long for a reply (a non-INVITE's final reply, an
    /// INVITE's first one; a local 408 after it); `None`: the host's transaction timers.
    pub timeout_ms: Option<u32>,
    /// Kamailio's fr_inv_timeout: once an INVITE rang, wait this long after each
    /// provisional reply for the next (then a local 408, and the INVITE is CANCELled);
    /// `None`: RFC 3261's Timer C.
    pub invite_timeout_ms: Option<u32>,
    /// Send from this listener of the host, `proto:ip:port` (Kamailio's `sock`); `None`:
    /// the host's choice.
    pub local_socket: Option<String>,
}

/// `N` random bytes from the host as hex digits (Call-IDs, tags, cnonces).
pub fn random_hex<const N: usize, H: HostState + ?Sized>(host: &mut H) -> String {
    let mut buf = [0u8; N];
    host.random_bytes(&mut buf);
    crate::digest::to_hex(&buf)
}

/// Where a hook call happens (the WIT `context` record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// A request inside a dialog (To tag present).
    pub in_dialog: bool,
    /// Key for dialog variables (the Call-ID).
    pub dialog_key: Option<String>,
    /// Key for transaction variables; the same for a request and its replies.
    pub transaction_key: String,
    /// For an in-dialog request: the Route value that named this host, with the
    /// parameters put into its Record-Route earlier.
    pub own_route: Option<String>,
}

/// What the filter decided for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the (possibly edited) message.
    Continue,
    /// Answer the request locally.
    Reply { code: u16, reason: String },
    /// Drop the message.
    Drop,
    /// Failure hook: send the edited request again.
    Resend,
}
