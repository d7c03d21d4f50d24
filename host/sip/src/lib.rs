//! SIP message codec for siphost: parses requests and responses into a zero-copy, lazily
//! read message, records edits, and serializes copying untouched bytes verbatim.
//!
//! Also here: URIs ([`Uri`]), name-addr values ([`NameAddr`]), Via values ([`Via`]), TCP
//! stream framing ([`frame_stream`]) and 400 answers to malformed requests
//! ([`reply_to_malformed`]).

mod error;
mod framing;
mod header;
mod malformed;
mod message;
mod method;
mod name_addr;
mod scan;
mod uri;
mod via;

pub use bytes::Bytes;
pub use error::{ErrorKind, ParseError};
pub use framing::{Framing, frame_stream};
pub use header::{Params, same_header_name};
pub use malformed::reply_to_malformed;
pub use message::{MAX_MESSAGE_SIZE, Message};
pub use method::Method;
pub use name_addr::NameAddr;
pub use uri::Uri;
pub use via::Via;
