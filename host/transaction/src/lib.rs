//! Sans-I/O RFC 3261 §17 transaction machines (with RFC 6026's "Accepted" states) and a timer queue.
//! The caller owns sockets, bytes, matching and the clock; machines take `Instant`s and return actions.
//!
//! # Driving a machine
//!
//! Every input (`on_response`, `send_response`, `on_request_retransmit`, `on_ack`,
//! `on_transport_error`, `handle_timeout`) takes the current time. After each input the caller
//! drains `poll_action()` until it returns `None`, performs each action, then re-reads
//! `poll_timeout()` and (re)schedules the transaction in a [`TimerQueue`]. When a machine yields
//! its `Terminated` action the caller drops it from its table.

#![warn(missing_docs)]

mod actions;
mod client;
mod queue;
mod server;
mod timers;

use std::fmt;

pub use client::{ClientAction, ClientState, ClientTransaction};
pub use queue::{PopExpired, TimerQueue};
pub use server::{ServerAction, ServerState, ServerTransaction};
pub use timers::{ConfigError, Timer, TimerConfig};

/// Which of the two RFC 3261 transaction families a machine follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An INVITE transaction (§17.1.1 / §17.2.1, Figures 5 and 7, as updated by RFC 6026).
    Invite,
    /// Any other request except ACK (§17.1.2 / §17.2.2, Figures 6 and 8).
    NonInvite,
}

/// A misuse of a transaction machine; the input was ignored and the machine is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionError {
    /// The transaction already terminated; the caller should have dropped it.
    Terminated,
    /// A status code outside 100–699.
    InvalidStatus(u16),
    /// The server may not send this response in its current state (a final response was
    /// already sent; after a 2xx to an INVITE only further 2xx may follow). Do not send it.
    ResponseNotAllowed {
        /// The status the caller tried to send.
        status: u16,
        /// The state the server transaction is in.
        state: ServerState,
    },
    /// ACK only belongs to INVITE transactions.
    AckOnNonInvite,
}

impl fmt::Display for TransactionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransactionError::Terminated => f.write_str("transaction already terminated"),
            TransactionError::InvalidStatus(status) => {
                write!(f, "status code {status} is outside 100-699")
            }
            TransactionError::ResponseNotAllowed { status, state } => {
                write!(f, "a {status} response may not be sent in state {state:?}")
            }
            TransactionError::AckOnNonInvite => {
                f.write_str("ACK does not belong to a non-INVITE transaction")
            }
        }
    }
}

impl std::error::Error for TransactionError {}

/// The class of a valid status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StatusClass {
    /// 100–199.
    Provisional,
    /// 200–299.
    Success,
    /// 300–699.
    Failure,
}

impl StatusClass {
    fn of(status: u16) -> Result<Self, TransactionError> {
        match status {
            100..=199 => Ok(StatusClass::Provisional),
            200..=299 => Ok(StatusClass::Success),
            300..=699 => Ok(StatusClass::Failure),
            _ => Err(TransactionError::InvalidStatus(status)),
        }
    }
}
