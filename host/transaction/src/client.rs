//! Client transactions: RFC 3261 §17.1.1 (INVITE, Figure 5 as updated by RFC 6026) and §17.1.2
//! (non-INVITE, Figure 6). The caller sends the request and ACKs; the machine says when.

use std::time::Instant;

use crate::actions::Actions;
use crate::timers::{Armed, Timer, TimerConfig, armed_deadlines, earliest_due, only_waiting};
use crate::{Kind, StatusClass, TransactionError};

/// The states of Figures 5 and 6 (RFC 6026 adds "Accepted" to the INVITE client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// INVITE: request sent, no response yet (Timers A and B run).
    Calling,
    /// Non-INVITE: request sent, no response yet (Timers E and F run).
    Trying,
    /// A provisional response arrived. INVITE: no timer runs (the proxy's Timer C guards it);
    /// non-INVITE: Timer E continues at T2 intervals and Timer F still runs.
    Proceeding,
    /// A final response arrived (3xx–6xx for INVITE, any final for non-INVITE); response
    /// retransmissions are absorbed until Timer D (INVITE) or K (non-INVITE) fires.
    Completed,
    /// INVITE only (RFC 6026): a 2xx arrived; every further 2xx is passed up until Timer M.
    Accepted,
    /// Finished; the caller drops the machine.
    Terminated,
}

/// What a client transaction asks its caller to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAction {
    /// Hand the request to the transport: the first send (queued by the constructor) and every
    /// retransmission (Timers A and E).
    Transmit,
    /// INVITE only: send the ACK for the 3xx–6xx final response just received. The caller builds
    /// it (RFC 3261 §17.1.1.3: Request-URI, Call-ID, From, CSeq number and top Via of the
    /// request, To of the response). Repeated for each retransmission of that response.
    SendAck,
    /// Pass the response just received up to the TU (the proxy's response context).
    PassUp(u16),
    /// The response just received was a retransmission or is not for the TU: drop it.
    Absorb,
    /// Timer B or F fired without a final response: the TU treats it as a 408 (RFC 3261 §16.7
    /// step 2 for proxies). `Terminated` follows.
    Timeout,
    /// The transport failed for this transaction. `Terminated` follows.
    TransportError,
    /// The machine reached "Terminated" and will do nothing more; drop it.
    Terminated,
}

/// An RFC 3261 §17.1 client transaction, INVITE or non-INVITE, without I/O.
///
/// Each message input yields exactly one of [`ClientAction::PassUp`] or [`ClientAction::Absorb`]
/// for the response in hand, possibly preceded by [`ClientAction::SendAck`].
#[derive(Clone, Debug)]
pub struct ClientTransaction {
    kind: Kind,
    reliable: bool,
    config: TimerConfig,
    state: ClientState,
    /// Timer A or E.
    retransmit: Option<Armed>,
    /// Timer B, D, F, K or M: reaching it ends the current state.
    expiry: Option<Armed>,
    actions: Actions<ClientAction>,
}

impl ClientTransaction {
    /// Starts a client transaction whose request is about to be sent; the first action is
    /// [`ClientAction::Transmit`] for that initial send. `reliable` is true for TCP, TLS, SCTP
    /// and WebSocket: no retransmission timers are armed and Timers D and K are zero.
    pub fn new(kind: Kind, reliable: bool, config: TimerConfig, now: Instant) -> Self {
        let (state, retransmit_timer, retransmit_initial, expiry_timer, expiry) = match kind {
            Kind::Invite => (
                ClientState::Calling,
                Timer::A,
                config.timer_a_initial(),
                Timer::B,
                config.timer_b(),
            ),
            Kind::NonInvite => (
                ClientState::Trying,
                Timer::E,
                config.timer_e_initial(),
                Timer::F,
                config.timer_f(),
            ),
        };
        let retransmit = (!reliable).then(|| Armed::new(retransmit_timer, now, retransmit_initial));
        ClientTransaction {
            kind,
            reliable,
            config,
            state,
            retransmit,
            expiry: Some(Armed::new(expiry_timer, now, expiry)),
            actions: Actions::with(ClientAction::Transmit),
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
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// True once the machine reached "Terminated".
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// The next action for the caller, in order; `None` when there is nothing to do.
    pub fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    /// The next deadline at which [`handle_timeout`](Self::handle_timeout) must be called;
    /// `None` when no timer runs (terminated, or an INVITE in "Proceeding").
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

    /// A response matching this transaction arrived with `status` (100–699).
    pub fn on_response(&mut self, status: u16, now: Instant) -> Result<(), TransactionError> {
        let class = StatusClass::of(status)?;
        if self.is_terminated() {
            return Err(TransactionError::Terminated);
        }
        match self.kind {
            Kind::Invite => self.invite_response(status, class, now),
            Kind::NonInvite => self.non_invite_response(status, class, now),
        }
        Ok(())
    }

    fn invite_response(&mut self, status: u16, class: StatusClass, now: Instant) {
        use ClientState::{Accepted, Calling, Completed, Proceeding};
        match (self.state, class) {
            (Calling | Proceeding, StatusClass::Provisional) => {
                // §17.1.1.2: no more retransmissions once a provisional arrived; Timer B only
                // guards "Calling" in Figure 5, the proxy's Timer C takes over.
                self.state = Proceeding;
                self.retransmit = None;
                self.expiry = None;
                self.actions.push_back(ClientAction::PassUp(status));
            }
            (Calling | Proceeding, StatusClass::Success) => {
                self.state = Accepted;
                self.retransmit = None;
                self.expiry = Some(Armed::new(Timer::M, now, self.config.timer_m()));
                self.actions.push_back(ClientAction::PassUp(status));
            }
            (Calling | Proceeding, StatusClass::Failure) => {
                self.retransmit = None;
                self.actions.push_back(ClientAction::SendAck);
                self.actions.push_back(ClientAction::PassUp(status));
                self.complete(Timer::D, self.config.timer_d(self.reliable), now);
            }
            (Completed, StatusClass::Failure) => {
                // A retransmitted final means our ACK was lost: send it again.
                self.actions.push_back(ClientAction::SendAck);
                self.actions.push_back(ClientAction::Absorb);
            }
            (Accepted, StatusClass::Success) => {
                // RFC 6026 §8.4: retransmitted or forked 2xx go to the TU during Timer M.
                self.actions.push_back(ClientAction::PassUp(status));
            }
            _ => self.actions.push_back(ClientAction::Absorb),
        }
    }

    fn non_invite_response(&mut self, status: u16, class: StatusClass, now: Instant) {
        use ClientState::{Proceeding, Trying};
        match (self.state, class) {
            (Trying | Proceeding, StatusClass::Provisional) => {
                // Timer E keeps its current deadline; its next interval becomes T2.
                self.state = Proceeding;
                self.actions.push_back(ClientAction::PassUp(status));
            }
            (Trying | Proceeding, StatusClass::Success | StatusClass::Failure) => {
                self.retransmit = None;
                self.actions.push_back(ClientAction::PassUp(status));
                self.complete(Timer::K, self.config.timer_k(self.reliable), now);
            }
            _ => self.actions.push_back(ClientAction::Absorb),
        }
    }

    /// Enters "Completed" and arms the linger timer, or terminates at once when it is zero
    /// (reliable transports), since a zero timer would only add a round trip through the queue.
    fn complete(&mut self, timer: Timer, linger: std::time::Duration, now: Instant) {
        if linger.is_zero() {
            self.terminate();
        } else {
            self.state = ClientState::Completed;
            self.expiry = Some(Armed::new(timer, now, linger));
        }
    }

    /// The transport reported a failure sending this transaction's request or ACK, or lost the
    /// connection it depends on. Figures 5 and 6 draw the transition from "Calling"/"Trying",
    /// "Proceeding" (non-INVITE) and "Completed"; here every live state terminates, because a
    /// response can no longer arrive over a failed hop and Timer B/M would only delay cleanup.
    pub fn on_transport_error(&mut self, _now: Instant) -> Result<(), TransactionError> {
        if self.is_terminated() {
            return Err(TransactionError::Terminated);
        }
        self.actions.push_back(ClientAction::TransportError);
        self.terminate();
        Ok(())
    }

    /// Fires every timer due at `now`. Several retransmission deadlines passed in one call
    /// (a late caller) yield a single [`ClientAction::Transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut transmitted = false;
        while let Some(due) = earliest_due(self.expiry, self.retransmit, now) {
            match due.timer {
                Timer::A | Timer::E => {
                    let next = match (due.timer, self.state) {
                        // §17.1.1.2: Timer A doubles without a cap (Timer B ends it).
                        (Timer::A, _) => due.interval.saturating_mul(2),
                        // §17.1.2.2: in "Proceeding" every further interval is T2.
                        (_, ClientState::Proceeding) => self.config.t2(),
                        _ => self.config.doubled_capped(due.interval),
                    };
                    self.retransmit = due.rearmed(next);
                    if !transmitted {
                        transmitted = true;
                        self.actions.push_back(ClientAction::Transmit);
                    }
                }
                Timer::B | Timer::F => {
                    self.actions.push_back(ClientAction::Timeout);
                    self.terminate();
                }
                _ => self.terminate(),
            }
        }
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.retransmit = None;
        self.expiry = None;
        self.actions.push_back(ClientAction::Terminated);
    }
}
