//! Plain in-memory [`SipMessage`] and [`HostState`]: what native tests and benches run the
//! uac logic over, and what a Rust program can use to run it outside wasm.

use std::collections::HashMap;

use crate::host::{HostState, Level, OutgoingRequest, SipMessage};

/// A SIP message as a start line and ordered header lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemMessage {
    start: String,
    headers: Vec<(String, String)>,
    body: String,
    /// Record-Route parameters the host would append (`None`: not record-routed).
    pub rr_params: Option<String>,
    /// Source address, "ip:port".
    pub source: String,
    /// The next hop chosen by a rule (`$du`).
    pub next_hop: Option<String>,
    /// The endpoint the host identified the request as.
    pub endpoint: Option<String>,
}

/// Compact header forms (RFC 3261 §7.3.3 and extensions) to full names.
fn full_name(name: &str) -> &str {
    match name {
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "v" | "V" => "Via",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "k" | "K" => "Supported",
        "s" | "S" => "Subject",
        _ => name,
    }
}

fn same_name(a: &str, b: &str) -> bool {
    full_name(a).eq_ignore_ascii_case(full_name(b))
}

impl MemMessage {
    /// Parses `start-line CRLF (header CRLF)* CRLF body`; `None` when a header line has no colon.
    pub fn parse(text: &str) -> Option<MemMessage> {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_owned();
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (n, v) = line.split_once(':')?;
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        Some(MemMessage {
            start,
            headers,
            body: body.to_owned(),
            rr_params: None,
            source: "127.0.0.1:5060".into(),
            next_hop: None,
            endpoint: None,
        })
    }

    /// The message as text.
    pub fn to_text(&self) -> String {
        let mut out = self.start.clone();
        out.push_str("\r\n");
        for (n, v) in &self.headers {
            out.push_str(n);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out
    }
}

impl SipMessage for MemMessage {
    fn set_request_uri(&mut self, uri: &str) {
        if !self.is_request() {
            return;
        }
        let mut parts = self.start.splitn(3, ' ');
        let (method, _, version) = (parts.next(), parts.next(), parts.next());
        if let (Some(method), Some(version)) = (method, version) {
            self.start = format!("{method} {uri} {version}");
        }
    }

    fn set_next_hop(&mut self, uri: &str) {
        self.next_hop = Some(uri.to_owned());
    }

    fn is_request(&self) -> bool {
        !self.start.starts_with("SIP/")
    }

    fn method(&self) -> Option<String> {
        self.is_request()
            .then(|| self.start.split(' ').next().map(str::to_owned))
            .flatten()
    }

    fn request_uri(&self) -> Option<String> {
        self.is_request()
            .then(|| self.start.split(' ').nth(1).map(str::to_owned))
            .flatten()
    }

    fn status(&self) -> Option<u16> {
        if self.is_request() {
            return None;
        }
        self.start.split(' ').nth(1)?.parse().ok()
    }

    fn reason(&self) -> Option<String> {
        if self.is_request() {
            return None;
        }
        self.start.splitn(3, ' ').nth(2).map(str::to_owned)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| same_name(n, name))
            .map(|(_, v)| v.clone())
    }

    fn headers(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| same_name(n, name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn body(&self) -> Vec<u8> {
        self.body.as_bytes().to_vec()
    }

    fn set_header(&mut self, name: &str, value: &str) {
        match self.headers.iter().position(|(n, _)| same_name(n, name)) {
            Some(first) => {
                self.headers[first].1 = value.to_owned();
                let mut i = 0;
                self.headers.retain(|(n, _)| {
                    i += 1;
                    i - 1 == first || !same_name(n, name)
                });
            }
            None => self.headers.push((name.to_owned(), value.to_owned())),
        }
    }

    fn add_header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    fn remove_header(&mut self, name: &str) -> u32 {
        let before = self.headers.len();
        self.headers.retain(|(n, _)| !same_name(n, name));
        (before - self.headers.len()) as u32
    }

    fn record_route_params(&self) -> Option<String> {
        self.rr_params.clone()
    }

    fn set_record_route_params(&mut self, params: Option<&str>) {
        self.rr_params = params.map(str::to_owned);
    }

    fn source(&self) -> String {
        self.source.clone()
    }

    fn endpoint(&self) -> Option<String> {
        self.endpoint.clone()
    }
}

/// Dialog and transaction variables in maps, log lines and counters kept for inspection,
/// and a deterministic byte source standing in for randomness.
#[derive(Debug, Default, Clone)]
pub struct MemHost {
    pub dialogs: HashMap<(String, String), String>,
    pub transactions: HashMap<(String, String), String>,
    pub logs: Vec<(Level, String)>,
    pub counters: HashMap<String, u64>,
    /// Next value of the byte source.
    pub seed: u8,
    /// Requests sent, with the id each got (1, 2, ...).
    pub sent: Vec<(u64, OutgoingRequest)>,
    /// The registrations the uac_reg_* functions see (`None`: no store).
    pub registrations: Option<crate::reg::store::MemoryStore>,
}

impl HostState for MemHost {
    fn dialog_get(&self, dialog: &str, name: &str) -> Option<String> {
        self.dialogs.get(&(dialog.into(), name.into())).cloned()
    }

    fn dialog_set(&mut self, dialog: &str, name: &str, value: Option<&str>) -> Result<(), String> {
        let key = (dialog.to_owned(), name.to_owned());
        match value {
            Some(v) => self.dialogs.insert(key, v.to_owned()),
            None => self.dialogs.remove(&key),
        };
        Ok(())
    }

    fn transaction_get(&self, transaction: &str, name: &str) -> Option<String> {
        self.transactions
            .get(&(transaction.into(), name.into()))
            .cloned()
    }

    fn transaction_set(
        &mut self,
        transaction: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), String> {
        let key = (transaction.to_owned(), name.to_owned());
        match value {
            Some(v) => self.transactions.insert(key, v.to_owned()),
            None => self.transactions.remove(&key),
        };
        Ok(())
    }

    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_owned()));
    }

    fn counter_add(&mut self, name: &str, value: u64) {
        *self.counters.entry(name.to_owned()).or_default() += value;
    }

    fn registrations(&mut self) -> Option<&mut dyn crate::reg::store::RegistrationStore> {
        self.registrations
            .as_mut()
            .map(|s| s as &mut dyn crate::reg::store::RegistrationStore)
    }

    fn random_bytes(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.seed;
            self.seed = self.seed.wrapping_add(1);
        }
    }

    fn send_request(&mut self, request: &OutgoingRequest) -> Result<u64, String> {
        let id = self.sent.len() as u64 + 1;
        self.sent.push((id, request.clone()));
        Ok(id)
    }
}
