//! A message whose reads are remembered for one hook: where each read is a call into the host
//! (the wasm glue), asking twice for the method or a header costs one call, not two.

use std::cell::{OnceCell, RefCell};

use crate::host::SipMessage;

/// Wraps a message for the length of one hook. The method is read once (no edit changes it);
/// header values are remembered until the first edit of any header, since an edit under one
/// name (a compact form, say) can change what another name reads.
pub struct CachedMessage<'a, M: SipMessage + ?Sized> {
    inner: &'a mut M,
    method: OnceCell<Option<String>>,
    headers: RefCell<Vec<(String, Option<String>)>>,
}

impl<'a, M: SipMessage + ?Sized> CachedMessage<'a, M> {
    pub fn new(inner: &'a mut M) -> Self {
        CachedMessage {
            inner,
            method: OnceCell::new(),
            headers: RefCell::new(Vec::new()),
        }
    }

    fn forget_headers(&mut self) {
        self.headers.get_mut().clear();
    }
}

impl<M: SipMessage + ?Sized> SipMessage for CachedMessage<'_, M> {
    fn is_request(&self) -> bool {
        self.inner.is_request()
    }
    fn method(&self) -> Option<String> {
        self.method.get_or_init(|| self.inner.method()).clone()
    }
    fn request_uri(&self) -> Option<String> {
        self.inner.request_uri()
    }
    fn status(&self) -> Option<u16> {
        self.inner.status()
    }
    fn reason(&self) -> Option<String> {
        self.inner.reason()
    }
    fn header(&self, name: &str) -> Option<String> {
        if let Some((_, value)) = self.headers.borrow().iter().find(|(n, _)| n == name) {
            return value.clone();
        }
        let value = self.inner.header(name);
        self.headers
            .borrow_mut()
            .push((name.to_owned(), value.clone()));
        value
    }
    fn headers(&self, name: &str) -> Vec<String> {
        self.inner.headers(name)
    }
    fn body(&self) -> Vec<u8> {
        self.inner.body()
    }
    fn set_header(&mut self, name: &str, value: &str) {
        self.forget_headers();
        self.inner.set_header(name, value)
    }
    fn add_header(&mut self, name: &str, value: &str) {
        self.forget_headers();
        self.inner.add_header(name, value)
    }
    fn remove_header(&mut self, name: &str) -> u32 {
        self.forget_headers();
        self.inner.remove_header(name)
    }
    fn record_route_params(&self) -> Option<String> {
        self.inner.record_route_params()
    }
    fn set_record_route_params(&mut self, params: Option<&str>) {
        self.inner.set_record_route_params(params)
    }
    fn source(&self) -> String {
        self.inner.source()
    }
    fn set_request_uri(&mut self, uri: &str) {
        self.inner.set_request_uri(uri)
    }
    fn set_next_hop(&mut self, uri: &str) {
        self.inner.set_next_hop(uri)
    }
    fn endpoint(&self) -> Option<String> {
        self.inner.endpoint()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::memory::MemMessage;

    /// Counts the reads that reach the message underneath.
    struct Counting {
        message: MemMessage,
        reads: Cell<u32>,
    }

    impl SipMessage for Counting {
        fn is_request(&self) -> bool {
            self.message.is_request()
        }
        fn method(&self) -> Option<String> {
            self.reads.set(self.reads.get() + 1);
            self.message.method()
        }
        fn request_uri(&self) -> Option<String> {
            self.message.request_uri()
        }
        fn status(&self) -> Option<u16> {
            self.message.status()
        }
        fn reason(&self) -> Option<String> {
            self.message.reason()
        }
        fn header(&self, name: &str) -> Option<String> {
            self.reads.set(self.reads.get() + 1);
            self.message.header(name)
        }
        fn headers(&self, name: &str) -> Vec<String> {
            self.message.headers(name)
        }
        fn body(&self) -> Vec<u8> {
            self.message.body()
        }
        fn set_header(&mut self, name: &str, value: &str) {
            self.message.set_header(name, value)
        }
        fn add_header(&mut self, name: &str, value: &str) {
            self.message.add_header(name, value)
        }
        fn remove_header(&mut self, name: &str) -> u32 {
            self.message.remove_header(name)
        }
        fn record_route_params(&self) -> Option<String> {
            self.message.record_route_params()
        }
        fn set_record_route_params(&mut self, params: Option<&str>) {
            self.message.set_record_route_params(params)
        }
        fn source(&self) -> String {
            self.message.source()
        }
        fn set_request_uri(&mut self, uri: &str) {
            self.message.set_request_uri(uri)
        }
        fn set_next_hop(&mut self, uri: &str) {
            self.message.set_next_hop(uri)
        }
        fn endpoint(&self) -> Option<String> {
            self.message.endpoint()
        }
    }

    fn invite() -> Counting {
        let text = "INVITE sip:b@example.com SIP/2.0\r\nf: <sip:a@example.com>;tag=1\r\n\
                    To: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        Counting {
            message: MemMessage::parse(text).expect("parses"),
            reads: Cell::new(0),
        }
    }

    #[test]
    fn repeated_reads_reach_the_message_once() {
        let mut counting = invite();
        let cached = CachedMessage::new(&mut counting);
        for _ in 0..3 {
            assert_eq!(cached.method().as_deref(), Some("INVITE"));
            assert_eq!(cached.header("To").as_deref(), Some("<sip:b@example.com>"));
            assert_eq!(cached.header("X-Absent"), None);
        }
        drop(cached);
        assert_eq!(counting.reads.get(), 3);
    }

    #[test]
    fn an_edit_under_any_name_is_read_back() {
        let mut counting = invite();
        let mut cached = CachedMessage::new(&mut counting);
        let before = cached.header("f");
        assert_eq!(before.as_deref(), Some("<sip:a@example.com>;tag=1"));
        // The compact form read above is changed through the full name.
        cached.set_header("From", "<sip:anonymous@anonymous.invalid>;tag=1");
        assert_eq!(
            cached.header("f").as_deref(),
            Some("<sip:anonymous@anonymous.invalid>;tag=1")
        );
        cached.add_header("X-Added", "1");
        assert_eq!(cached.header("X-Added").as_deref(), Some("1"));
        assert_eq!(cached.remove_header("X-Added"), 1);
        assert_eq!(cached.header("X-Added"), None);
    }
}
