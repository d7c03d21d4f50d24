//! Client transactions against RFC 3261 Figures 5 and 6 and RFC 6026's updated Figure 5.
//! Time is driven explicitly: every deadline is reached by calling `handle_timeout` at it.

use std::time::{Duration, Instant};

use siphost_transaction::{
    ClientAction, ClientState, ClientTransaction, Kind, Timer, TimerConfig, TransactionError,
};

use ClientAction::{Absorb, PassUp, SendAck, Terminated, Timeout, Transmit, TransportError};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn drain(tx: &mut ClientTransaction) -> Vec<ClientAction> {
    std::iter::from_fn(|| tx.poll_action()).collect()
}

/// Runs every deadline until the machine has none left; returns (offset from `start` in ms,
/// action) for each action produced, and checks no deadline moves backwards.
fn run_timers(tx: &mut ClientTransaction, start: Instant) -> Vec<(u128, ClientAction)> {
    let mut seen = Vec::new();
    let mut last = start;
    while let Some(at) = tx.poll_timeout() {
        assert!(at >= last, "deadline moved backwards");
        last = at;
        tx.handle_timeout(at);
        for action in drain(tx) {
            seen.push(((at - start).as_millis(), action));
        }
    }
    seen
}

fn offsets_of(seen: &[(u128, ClientAction)], wanted: ClientAction) -> Vec<u128> {
    seen.iter()
        .filter(|(_, action)| *action == wanted)
        .map(|(at, _)| *at)
        .collect()
}

fn new_client(kind: Kind, reliable: bool, now: Instant) -> ClientTransaction {
    let mut tx = ClientTransaction::new(kind, reliable, TimerConfig::default(), now);
    assert_eq!(
        drain(&mut tx),
        vec![Transmit],
        "constructor asks for the first send"
    );
    tx
}

#[test]
fn non_invite_udp_retransmits_doubling_capped_at_t2_then_times_out_at_64_t1() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::NonInvite, false, t0);
    assert_eq!(tx.state(), ClientState::Trying);
    let mut timers: Vec<_> = tx.timers().collect();
    timers.sort_by_key(|(_, at)| *at);
    assert_eq!(
        timers,
        vec![(Timer::E, t0 + ms(500)), (Timer::F, t0 + ms(32_000))]
    );

    let seen = run_timers(&mut tx, t0);
    assert_eq!(
        offsets_of(&seen, Transmit),
        vec![
            500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500
        ]
    );
    assert_eq!(
        seen[seen.len() - 2..],
        [(32_000, Timeout), (32_000, Terminated)]
    );
    assert!(tx.is_terminated());
}

#[test]
fn non_invite_udp_after_provisional_retransmits_every_t2() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::NonInvite, false, t0);
    tx.on_response(100, t0 + ms(200)).unwrap();
    assert_eq!(drain(&mut tx), vec![PassUp(100)]);
    assert_eq!(tx.state(), ClientState::Proceeding);

    let seen = run_timers(&mut tx, t0);
    // The already armed E (0.5 s) still fires; every interval after it is T2 = 4 s.
    assert_eq!(
        offsets_of(&seen, Transmit),
        vec![500, 4_500, 8_500, 12_500, 16_500, 20_500, 24_500, 28_500]
    );
    assert_eq!(offsets_of(&seen, Timeout), vec![32_000]);
}

#[test]
fn non_invite_provisional_in_the_middle_switches_to_t2() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::NonInvite, false, t0);
    tx.handle_timeout(t0 + ms(500));
    tx.handle_timeout(t0 + ms(1_500));
    assert_eq!(drain(&mut tx), vec![Transmit, Transmit]);
    tx.on_response(180, t0 + ms(2_000)).unwrap();
    tx.on_response(183, t0 + ms(2_100)).unwrap();
    assert_eq!(drain(&mut tx), vec![PassUp(180), PassUp(183)]);
    let seen = run_timers(&mut tx, t0);
    assert_eq!(
        offsets_of(&seen, Transmit),
        vec![3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
}

#[test]
fn non_invite_udp_final_completes_absorbs_retransmissions_until_timer_k() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::NonInvite, false, t0);
    tx.on_response(200, t0 + ms(1_000)).unwrap();
    assert_eq!(drain(&mut tx), vec![PassUp(200)]);
    assert_eq!(tx.state(), ClientState::Completed);
    assert_eq!(
        tx.timers().collect::<Vec<_>>(),
        vec![(Timer::K, t0 + ms(6_000))]
    );

    tx.on_response(200, t0 + ms(2_000)).unwrap();
    tx.on_response(100, t0 + ms(2_100)).unwrap();
    tx.on_response(500, t0 + ms(2_200)).unwrap();
    assert_eq!(drain(&mut tx), vec![Absorb, Absorb, Absorb]);

    tx.handle_timeout(t0 + ms(5_999));
    assert_eq!(drain(&mut tx), vec![]);
    tx.handle_timeout(t0 + ms(6_000));
    assert_eq!(drain(&mut tx), vec![Terminated]);
    assert!(tx.is_terminated());
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn non_invite_final_from_proceeding_completes() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::NonInvite, false, t0);
    tx.on_response(100, t0).unwrap();
    tx.on_response(404, t0 + ms(100)).unwrap();
    assert_eq!(drain(&mut tx), vec![PassUp(100), PassUp(404)]);
    assert_eq!(tx.state(), ClientState::Completed);
    let seen = run_timers(&mut tx, t0);
    assert_eq!(seen, vec![(5_100, Terminated)]);
}

#[test]
fn non_invite_tcp_never_retransmits_and_times_out_at_timer_f() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::NonInvite, true, t0);
    assert_eq!(
        tx.timers().collect::<Vec<_>>(),
        vec![(Timer::F, t0 + ms(32_000))]
    );
    tx.on_response(100, t0 + ms(10)).unwrap();
    assert_eq!(drain(&mut tx), vec![PassUp(100)]);
    let seen = run_timers(&mut tx, t0);
    assert_eq!(seen, vec![(32_000, Timeout), (32_000, Terminated)]);
}

#[test]
fn non_invite_tcp_final_terminates_at_once() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::NonInvite, true, t0);
    tx.on_response(200, t0 + ms(10)).unwrap();
    assert_eq!(drain(&mut tx), vec![PassUp(200), Terminated]);
    assert!(tx.is_terminated());
}

#[test]
fn invite_udp_retransmits_doubling_without_cap_then_timer_b() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::Invite, false, t0);
    assert_eq!(tx.state(), ClientState::Calling);
    let seen = run_timers(&mut tx, t0);
    assert_eq!(
        offsets_of(&seen, Transmit),
        vec![500, 1_500, 3_500, 7_500, 15_500, 31_500]
    );
    assert_eq!(
        seen[seen.len() - 2..],
        [(32_000, Timeout), (32_000, Terminated)]
    );
}

#[test]
fn invite_tcp_does_not_retransmit() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::Invite, true, t0);
    assert_eq!(
        tx.timers().collect::<Vec<_>>(),
        vec![(Timer::B, t0 + ms(32_000))]
    );
    let seen = run_timers(&mut tx, t0);
    assert_eq!(seen, vec![(32_000, Timeout), (32_000, Terminated)]);
}

#[test]
fn invite_provisional_stops_retransmission_and_timer_b() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::Invite, false, t0);
    tx.handle_timeout(t0 + ms(500));
    assert_eq!(drain(&mut tx), vec![Transmit]);
    tx.on_response(100, t0 + ms(600)).unwrap();
    tx.on_response(180, t0 + ms(700)).unwrap();
    assert_eq!(drain(&mut tx), vec![PassUp(100), PassUp(180)]);
    assert_eq!(tx.state(), ClientState::Proceeding);
    // Figure 5: no timer in "Proceeding"; the proxy's Timer C bounds it.
    assert_eq!(tx.poll_timeout(), None);
    tx.handle_timeout(t0 + ms(600_000));
    assert_eq!(drain(&mut tx), vec![]);
}

#[test]
fn invite_udp_failure_acks_absorbs_retransmissions_and_waits_timer_d() {
    for provisional_first in [false, true] {
        let t0 = Instant::now();
        let mut tx = new_client(Kind::Invite, false, t0);
        if provisional_first {
            tx.on_response(180, t0 + ms(100)).unwrap();
            assert_eq!(drain(&mut tx), vec![PassUp(180)]);
        }
        tx.on_response(486, t0 + ms(1_000)).unwrap();
        assert_eq!(drain(&mut tx), vec![SendAck, PassUp(486)]);
        assert_eq!(tx.state(), ClientState::Completed);
        assert_eq!(
            tx.timers().collect::<Vec<_>>(),
            vec![(Timer::D, t0 + ms(33_000))]
        );

        // A retransmitted final means the ACK was lost: ACK again, do not pass it up.
        tx.on_response(486, t0 + ms(1_500)).unwrap();
        assert_eq!(drain(&mut tx), vec![SendAck, Absorb]);
        tx.on_response(180, t0 + ms(1_600)).unwrap();
        tx.on_response(200, t0 + ms(1_700)).unwrap();
        assert_eq!(drain(&mut tx), vec![Absorb, Absorb]);

        let seen = run_timers(&mut tx, t0);
        assert_eq!(seen, vec![(33_000, Terminated)]);
    }
}

#[test]
fn invite_tcp_failure_acks_and_terminates_at_once() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::Invite, true, t0);
    tx.on_response(603, t0 + ms(10)).unwrap();
    assert_eq!(drain(&mut tx), vec![SendAck, PassUp(603), Terminated]);
}

#[test]
fn invite_2xx_enters_accepted_and_passes_every_2xx_up_until_timer_m() {
    for reliable in [false, true] {
        for provisional_first in [false, true] {
            let t0 = Instant::now();
            let mut tx = new_client(Kind::Invite, reliable, t0);
            if provisional_first {
                tx.on_response(183, t0).unwrap();
                assert_eq!(drain(&mut tx), vec![PassUp(183)]);
            }
            tx.on_response(200, t0 + ms(2_000)).unwrap();
            assert_eq!(drain(&mut tx), vec![PassUp(200)]);
            assert_eq!(tx.state(), ClientState::Accepted);
            assert_eq!(
                tx.timers().collect::<Vec<_>>(),
                vec![(Timer::M, t0 + ms(34_000))]
            );

            // Retransmitted and forked 2xx all reach the TU (RFC 6026); others are dropped.
            tx.on_response(200, t0 + ms(2_500)).unwrap();
            tx.on_response(202, t0 + ms(3_000)).unwrap();
            tx.on_response(180, t0 + ms(3_100)).unwrap();
            tx.on_response(486, t0 + ms(3_200)).unwrap();
            assert_eq!(
                drain(&mut tx),
                vec![PassUp(200), PassUp(202), Absorb, Absorb]
            );

            let seen = run_timers(&mut tx, t0);
            assert_eq!(seen, vec![(34_000, Terminated)], "reliable={reliable}");
        }
    }
}

#[test]
fn transport_error_terminates_from_every_live_state() {
    let t0 = Instant::now();
    let setups: [(Kind, &[u16], ClientState); 6] = [
        (Kind::Invite, &[], ClientState::Calling),
        (Kind::Invite, &[180], ClientState::Proceeding),
        (Kind::Invite, &[486], ClientState::Completed),
        (Kind::Invite, &[200], ClientState::Accepted),
        (Kind::NonInvite, &[], ClientState::Trying),
        (Kind::NonInvite, &[100], ClientState::Proceeding),
    ];
    for (kind, responses, expected) in setups {
        let mut tx = new_client(kind, false, t0);
        for &status in responses {
            tx.on_response(status, t0).unwrap();
        }
        drain(&mut tx);
        assert_eq!(tx.state(), expected);
        tx.on_transport_error(t0 + ms(10)).unwrap();
        assert_eq!(drain(&mut tx), vec![TransportError, Terminated]);
        assert_eq!(tx.poll_timeout(), None);
    }
    let mut completed = new_client(Kind::NonInvite, false, t0);
    completed.on_response(200, t0).unwrap();
    drain(&mut completed);
    completed.on_transport_error(t0).unwrap();
    assert_eq!(drain(&mut completed), vec![TransportError, Terminated]);
}

#[test]
fn misuse_is_a_typed_error_and_changes_nothing() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::Invite, false, t0);
    for bad in [0, 99, 700, 999] {
        assert_eq!(
            tx.on_response(bad, t0),
            Err(TransactionError::InvalidStatus(bad))
        );
    }
    assert_eq!(drain(&mut tx), vec![]);
    assert_eq!(tx.state(), ClientState::Calling);

    tx.on_transport_error(t0).unwrap();
    drain(&mut tx);
    assert_eq!(tx.on_response(200, t0), Err(TransactionError::Terminated));
    assert_eq!(tx.on_transport_error(t0), Err(TransactionError::Terminated));
    tx.handle_timeout(t0 + ms(100_000));
    assert_eq!(drain(&mut tx), vec![]);
    assert_eq!(tx.state(), ClientState::Terminated);
}

#[test]
fn late_caller_gets_one_transmit_and_keeps_the_schedule() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::Invite, false, t0);
    // Deadlines at 0.5, 1.5, 3.5 and 7.5 s all passed unnoticed.
    tx.handle_timeout(t0 + ms(10_000));
    assert_eq!(drain(&mut tx), vec![Transmit]);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(15_500)));
    // Far too late: the 15.5 s retransmission still goes out once, then Timer B ends it.
    tx.handle_timeout(t0 + ms(40_000));
    assert_eq!(drain(&mut tx), vec![Transmit, Timeout, Terminated]);
}

#[test]
fn handle_timeout_before_a_deadline_does_nothing() {
    let t0 = Instant::now();
    let mut tx = new_client(Kind::NonInvite, false, t0);
    tx.handle_timeout(t0 + ms(499));
    assert_eq!(drain(&mut tx), vec![]);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(500)));
}

#[test]
fn custom_timers_scale_the_schedule() {
    let t0 = Instant::now();
    let config = TimerConfig::new(ms(100), ms(1_000), ms(2_000)).unwrap();
    let mut tx = ClientTransaction::new(Kind::NonInvite, false, config, t0);
    assert_eq!(drain(&mut tx), vec![Transmit]);
    let seen = run_timers(&mut tx, t0);
    assert_eq!(
        offsets_of(&seen, Transmit),
        vec![100, 300, 700, 1_500, 2_500, 3_500, 4_500, 5_500]
    );
    assert_eq!(offsets_of(&seen, Timeout), vec![6_400]);

    let mut done = ClientTransaction::new(Kind::NonInvite, false, config, t0);
    done.on_response(200, t0).unwrap();
    assert_eq!(
        done.timers().collect::<Vec<_>>(),
        vec![(Timer::K, t0 + ms(2_000))]
    );
}

#[test]
fn timer_d_grows_with_t1_beyond_32_seconds() {
    let t0 = Instant::now();
    let config = TimerConfig::new(ms(1_000), ms(4_000), ms(5_000)).unwrap();
    let mut tx = ClientTransaction::new(Kind::Invite, false, config, t0);
    tx.on_response(500, t0).unwrap();
    assert_eq!(
        tx.timers().collect::<Vec<_>>(),
        vec![(Timer::D, t0 + ms(64_000))]
    );
}

#[test]
fn only_the_waits_that_end_a_transaction_count_as_only_waiting() {
    let t0 = Instant::now();
    // INVITE: Calling retransmits (A) and gives up (B); Completed only waits (D).
    let mut tx = new_client(Kind::Invite, false, t0);
    assert!(!tx.only_waiting());
    tx.on_response(486, t0 + ms(100)).unwrap();
    assert_eq!(tx.state(), ClientState::Completed);
    assert!(tx.only_waiting());
    // RFC 6026 Accepted only waits (M).
    let mut tx = new_client(Kind::Invite, false, t0);
    tx.on_response(200, t0 + ms(100)).unwrap();
    assert!(tx.only_waiting());
    // Non-INVITE: Trying retransmits (E); Completed only waits (K).
    let mut tx = new_client(Kind::NonInvite, false, t0);
    assert!(!tx.only_waiting());
    tx.on_response(200, t0 + ms(100)).unwrap();
    assert!(tx.only_waiting());
    assert!(Timer::D.only_ends_wait() && !Timer::A.only_ends_wait());
}
