//! Server transactions: RFC 3261 §17.2.1 (INVITE, Figure 7 as updated by RFC 6026) and §17.2.2
//! (non-INVITE, Figure 8). The caller builds and sends responses; the machine says when to resend.

use std::time::{Duration, Instant};

use crate::actions::Actions;
use crate::timers::{Armed, Timer, TimerConfig, armed_deadlines, earliest_due, only_waiting};
use crate::{Kind, StatusClass, TransactionError};

/// The states of Figures 7 and 8 (RFC 6026 adds "Accepted" to the INVITE server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerState {
    /// Non-INVITE: request received, no response sent yet; retransmissions are absorbed.
    Trying,
    /// A provisional response was sent (for INVITE, from creation: see
    /// [`ServerAction::SendTrying`]); retransmissions re-send the latest one.
    Proceeding,
    /// A final response was sent (3xx–6xx for INVITE, any final for non-INVITE).
    /// INVITE: Timer G retransmits it (unreliable) until an ACK or Timer H; non-INVITE: request
    /// retransmissions re-send it until Timer J.
    Completed,
    /// INVITE only (RFC 6026): a 2xx was sent; INVITE retransmissions are absorbed until Timer L.
    Accepted,
    /// INVITE only: the ACK for the 3xx–6xx arrived; ACK retransmissions are absorbed until
    /// Timer I.
    Confirmed,
    /// Finished; the caller drops the machine.
    Terminated,
}

/// What a server transaction asks its caller to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerAction {
    /// INVITE only, queued by the constructor: build a 100 (Trying) from the request, send it and
    /// keep it as the latest response. RFC 3261 §17.2.1 requires it unless the TU answers within
    /// 200 ms; a proxy forwarding downstream cannot know that, so the machine always asks for it
    /// at once (as Kamailio's tm does), which also stops the client's Timer A early. Skipping it
    /// is only correct when the caller sends another response immediately, since a request
    /// retransmission yields [`ServerAction::Transmit`] of "the latest response".
    SendTrying,
    /// Resend the latest response the caller sent on this transaction (after a request
    /// retransmission, or when Timer G fires).
    Transmit,
    /// INVITE only, "Accepted": the ACK just received belongs to the 2xx; pass it up so the
    /// proxy forwards it (see [`ServerTransaction::on_ack`]).
    PassUpAck,
    /// The request or ACK just received was a retransmission: drop it.
    Absorb,
    /// Timer H fired: no ACK arrived for the 3xx–6xx. `Terminated` follows.
    Timeout,
    /// The transport failed for this transaction; inform the TU. Non-INVITE: `Terminated`
    /// follows. INVITE: the machine stays in its state (RFC 6026 Figure 7), because a later
    /// response may go out on a new connection (RFC 3261 §18.2.2) and Timers H/L still bound it.
    TransportError,
    /// The machine reached "Terminated" and will do nothing more; drop it.
    Terminated,
}

/// An RFC 3261 §17.2 server transaction, INVITE or non-INVITE, without I/O.
///
/// Every request retransmission or ACK yields exactly one of [`ServerAction::Transmit`],
/// [`ServerAction::Absorb`] or [`ServerAction::PassUpAck`]; a retransmitted request never goes
/// up to the TU.
#[derive(Clone, Debug)]
pub struct ServerTransaction {
    kind: Kind,
    reliable: bool,
    config: TimerConfig,
    state: ServerState,
    /// Timer G.
    retransmit: Option<Armed>,
    /// Timer H, I, J or L: reaching it ends the current state.
    expiry: Option<Armed>,
    actions: Actions<ServerAction>,
}

impl ServerTransaction {
    /// Starts a server transaction for a request just received (not an ACK). An INVITE server
    /// starts in "Proceeding" with [`ServerAction::SendTrying`] queued; a non-INVITE server
    /// starts in "Trying". `reliable` is true for TCP, TLS, SCTP and WebSocket. `now` is taken
    /// for symmetry with [`ClientTransaction::new`](crate::ClientTransaction::new): no server
    /// timer runs before the first final response.
    pub fn new(kind: Kind, reliable: bool, config: TimerConfig, _now: Instant) -> Self {
        let (state, actions) = match kind {
            Kind::Invite => (
                ServerState::Proceeding,
                Actions::with(ServerAction::SendTrying),
            ),
            Kind::NonInvite => (ServerState::Trying, Actions::new()),
        };
        ServerTransaction {
            kind,
            reliable,
            config,
            state,
            retransmit: None,
            expiry: None,
            actions,
        }
    }

    /// INVITE or non-INVITE.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the transport is reliable (set at construction).
    pub fn is_reliable(&self) -> bool {
        self.reliable
    }

    /// The current state, for tests and metrics.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// True once the machine reached "Terminated".
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// The next action for the caller, in order; `None` when there is nothing to do.
    pub fn poll_action(&mut self) -> Option<ServerAction> {
        self.actions.pop_front()
    }

    /// The next deadline at which [`handle_timeout`](Self::handle_timeout) must be called;
    /// `None` while the machine waits for the TU ("Trying"/"Proceeding") or has terminated.
    pub fn poll_timeout(&self) -> Option<Instant> {
        armed_deadlines(self.retransmit, self.expiry)
            .map(|(_, at)| at)
            .min()
    }

    /// True when all that is left is waiting to end (its deadline may be served late: the
    /// transaction only absorbs retransmissions for longer).
    pub fn only_waiting(&self) -> bool {
        only_waiting(self.retransmit, self.expiry)
    }

    /// The timers currently armed with their deadlines, for tests and metrics.
    pub fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        armed_deadlines(self.retransmit, self.expiry)
    }

    /// The TU is about to send a response with `status` on this transaction. `Ok` means: send
    /// it now and keep its bytes as the latest response ([`ServerAction::Transmit`] resends
    /// them). An error means the response must not be sent: a final response was already sent
    /// (after a 2xx to an INVITE only further 2xx may follow, RFC 6026 §7.1), or the
    /// transaction ended. On reliable transports a non-INVITE final response is followed by
    /// [`ServerAction::Terminated`] (Timer J is zero): still send it, then drop the machine.
    pub fn send_response(&mut self, status: u16, now: Instant) -> Result<(), TransactionError> {
        let class = StatusClass::of(status)?;
        use ServerState::{Accepted, Completed, Proceeding, Trying};
        match (self.kind, self.state, class) {
            (_, ServerState::Terminated, _) => return Err(TransactionError::Terminated),
            (Kind::Invite, Proceeding, StatusClass::Provisional)
            | (Kind::Invite, Accepted, StatusClass::Success) => {}
            (Kind::Invite, Proceeding, StatusClass::Success) => {
                // RFC 6026 §7.1: the TU (the UAS core, or the proxy forwarding 2xx from any
                // branch) owns 2xx reliability; the transaction only absorbs retransmissions.
                self.state = Accepted;
                self.expiry = Some(Armed::new(Timer::L, now, self.config.timer_l()));
            }
            (Kind::Invite, Proceeding, StatusClass::Failure) => {
                self.state = Completed;
                self.retransmit = (!self.reliable)
                    .then(|| Armed::new(Timer::G, now, self.config.timer_g_initial()));
                self.expiry = Some(Armed::new(Timer::H, now, self.config.timer_h()));
            }
            (Kind::NonInvite, Trying | Proceeding, StatusClass::Provisional) => {
                self.state = Proceeding;
            }
            (Kind::NonInvite, Trying | Proceeding, StatusClass::Success | StatusClass::Failure) => {
                self.linger(Completed, Timer::J, self.config.timer_j(self.reliable), now);
            }
            (_, state, _) => return Err(TransactionError::ResponseNotAllowed { status, state }),
        }
        Ok(())
    }

    /// A retransmission of the request that created this transaction arrived (never an ACK:
    /// use [`on_ack`](Self::on_ack)). Yields [`ServerAction::Transmit`] when the latest
    /// response must be resent, otherwise [`ServerAction::Absorb`].
    pub fn on_request_retransmit(&mut self, _now: Instant) -> Result<(), TransactionError> {
        let action = match self.state {
            ServerState::Terminated => return Err(TransactionError::Terminated),
            // §17.2.2: nothing was sent yet, so there is nothing to resend.
            ServerState::Trying => ServerAction::Absorb,
            ServerState::Proceeding | ServerState::Completed => ServerAction::Transmit,
            // RFC 6026 §7.1: INVITE retransmissions after a 2xx are absorbed; the TU resends
            // the 2xx itself. In "Confirmed" the ACK proves the final response arrived.
            ServerState::Accepted | ServerState::Confirmed => ServerAction::Absorb,
        };
        self.actions.push_back(action);
        Ok(())
    }

    /// An ACK matching this INVITE server transaction arrived.
    ///
    /// In "Completed" it acknowledges the 3xx–6xx: the machine enters "Confirmed" (Timer I) and
    /// absorbs it. In "Accepted" it is the ACK for a 2xx, which RFC 3261 §17 makes its own
    /// transaction owned by the UACs' cores: a proxy must forward it, so it is passed up
    /// ([`ServerAction::PassUpAck`]) rather than swallowed; RFC 6026's "Accepted" exists to
    /// absorb INVITE retransmissions, not ACKs. (Usually a 2xx ACK carries a new branch and
    /// matches no transaction at all; this covers peers that reuse the INVITE's branch.)
    /// Anywhere else it is absorbed.
    pub fn on_ack(&mut self, now: Instant) -> Result<(), TransactionError> {
        if self.kind == Kind::NonInvite {
            return Err(TransactionError::AckOnNonInvite);
        }
        match self.state {
            ServerState::Terminated => return Err(TransactionError::Terminated),
            ServerState::Completed => {
                self.actions.push_back(ServerAction::Absorb);
                self.retransmit = None;
                self.linger(
                    ServerState::Confirmed,
                    Timer::I,
                    self.config.timer_i(self.reliable),
                    now,
                );
            }
            ServerState::Accepted => self.actions.push_back(ServerAction::PassUpAck),
            _ => self.actions.push_back(ServerAction::Absorb),
        }
        Ok(())
    }

    /// The transport failed to send one of this transaction's responses, or lost the connection
    /// the request came on. INVITE: the TU is informed and the state is kept (RFC 6026 Figure 7
    /// draws self-loops). Non-INVITE: the TU is informed and the machine terminates (Figure 8).
    pub fn on_transport_error(&mut self, _now: Instant) -> Result<(), TransactionError> {
        if self.is_terminated() {
            return Err(TransactionError::Terminated);
        }
        self.actions.push_back(ServerAction::TransportError);
        if self.kind == Kind::NonInvite {
            self.terminate();
        }
        Ok(())
    }

    /// Fires every timer due at `now`. Several Timer G deadlines passed in one call (a late
    /// caller) yield a single [`ServerAction::Transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut transmitted = false;
        while let Some(due) = earliest_due(self.expiry, self.retransmit, now) {
            match due.timer {
                Timer::G => {
                    let next = self.config.doubled_capped(due.interval);
                    self.retransmit = due.rearmed(next);
                    if !transmitted {
                        transmitted = true;
                        self.actions.push_back(ServerAction::Transmit);
                    }
                }
                Timer::H => {
                    self.actions.push_back(ServerAction::Timeout);
                    self.terminate();
                }
                _ => self.terminate(),
            }
        }
    }

    /// Enters `state` with its linger timer, or terminates at once when the timer is zero
    /// (reliable transports): a zero timer would only add a round trip through the queue.
    fn linger(&mut self, state: ServerState, timer: Timer, linger: Duration, now: Instant) {
        if linger.is_zero() {
            self.terminate();
        } else {
            self.state = state;
            self.expiry = Some(Armed::new(timer, now, linger));
        }
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.retransmit = None;
        self.expiry = None;
        self.actions.push_back(ServerAction::Terminated);
    }
}
