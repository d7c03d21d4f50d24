//! CSeq + 1 for authenticated resends: the per-dialog shift (kept by the caller in host
//! dialog state) renumbers the caller's later requests and maps their replies back.
//!
//! A resend after 401/407 must carry a higher CSeq (RFC 3261 §22.2), which Kamailio's
//! uac_auth does not do. Once the provider has seen CSeq n+shift, every later request
//! of the caller (ACK for 2xx, CANCEL, BYE, re-INVITE) must be shifted the same way,
//! and the replies going back to the caller carry the caller's own numbers again.
//! Requests from the callee use the callee's CSeq space and are left alone.

use thiserror::Error;

/// RFC 3261 §8.1.1.5: the sequence number is below 2**31.
pub const CSEQ_MAX: u32 = (1 << 31) - 1;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CseqError {
    #[error("CSeq {0:?} is not \"<number> <method>\"")]
    Malformed(String),
    #[error("CSeq {number} shifted by {shift} passes 2^31 - 1")]
    Overflow { number: u32, shift: u32 },
    #[error(
        "CSeq {number} of a reply is below the shift {shift}: not a reply to a shifted request"
    )]
    Underflow { number: u32, shift: u32 },
}

/// A parsed CSeq header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cseq<'a> {
    pub number: u32,
    pub method: &'a str,
}

impl<'a> Cseq<'a> {
    pub fn parse(value: &'a str) -> Result<Cseq<'a>, CseqError> {
        let malformed = || CseqError::Malformed(value.to_string());
        let mut parts = value.split_ascii_whitespace();
        let (Some(number), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed());
        };
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let number: u32 = number.parse().map_err(|_| malformed())?;
        if number > CSEQ_MAX {
            return Err(malformed());
        }
        Ok(Cseq { number, method })
    }

    fn with_number(self, number: u32) -> String {
        format!("{number} {}", self.method)
    }
}

/// Who sent a request within the dialog, seen from the authenticating proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The side siphost authenticates for (the dialog's caller): its CSeq space is shifted.
    FromCaller,
    /// The far side: its CSeq space is untouched.
    FromCallee,
}

/// An authenticated resend: the CSeq value the resent request carries and the dialog's
/// new shift. `value` is the CSeq of the request as last sent (already shifted).
pub fn resend(value: &str, shift: u32) -> Result<(String, u32), CseqError> {
    let cseq = Cseq::parse(value)?;
    let overflow = CseqError::Overflow {
        number: cseq.number,
        shift: 1,
    };
    let number = cseq.number.checked_add(1).ok_or(overflow.clone())?;
    let new_shift = shift.checked_add(1).ok_or(overflow.clone())?;
    if number > CSEQ_MAX {
        return Err(overflow);
    }
    Ok((cseq.with_number(number), new_shift))
}

/// The CSeq value an in-dialog request (ACK, CANCEL, BYE, re-INVITE, …) goes out with;
/// `None` when it stays as it is.
pub fn outgoing_request(
    value: &str,
    direction: Direction,
    shift: u32,
) -> Result<Option<String>, CseqError> {
    if direction == Direction::FromCallee || shift == 0 {
        return Ok(None);
    }
    let cseq = Cseq::parse(value)?;
    let number = cseq
        .number
        .checked_add(shift)
        .filter(|n| *n <= CSEQ_MAX)
        .ok_or(CseqError::Overflow {
            number: cseq.number,
            shift,
        })?;
    Ok(Some(cseq.with_number(number)))
}

/// The CSeq value a reply goes back to the caller with. `shift_at_send` is the shift
/// the request was sent with (the dialog's shift after that request's own resends);
/// `None` when it stays as it is.
pub fn incoming_reply(
    value: &str,
    direction: Direction,
    shift_at_send: u32,
) -> Result<Option<String>, CseqError> {
    if direction == Direction::FromCallee || shift_at_send == 0 {
        return Ok(None);
    }
    let cseq = Cseq::parse(value)?;
    let number = cseq
        .number
        .checked_sub(shift_at_send)
        .ok_or(CseqError::Underflow {
            number: cseq.number,
            shift: shift_at_send,
        })?;
    Ok(Some(cseq.with_number(number)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{FromCallee, FromCaller};

    #[test]
    fn an_authenticated_call_end_to_end() {
        // The caller's INVITE (CSeq 1) is challenged once: resent as 2, shift 1.
        let (resent, shift) = resend("1 INVITE", 0).unwrap();
        assert_eq!((resent.as_str(), shift), ("2 INVITE", 1));
        // 200 OK back to the caller carries the caller's number.
        assert_eq!(
            incoming_reply("2 INVITE", FromCaller, shift)
                .unwrap()
                .as_deref(),
            Some("1 INVITE")
        );
        // ACK for the 2xx, then BYE: shifted like the INVITE.
        for (caller, upstream) in [("1 ACK", "2 ACK"), ("2 BYE", "3 BYE")] {
            assert_eq!(
                outgoing_request(caller, FromCaller, shift)
                    .unwrap()
                    .as_deref(),
                Some(upstream)
            );
        }
        assert_eq!(
            incoming_reply("3 BYE", FromCaller, shift)
                .unwrap()
                .as_deref(),
            Some("2 BYE")
        );
    }

    #[test]
    fn a_cancel_after_the_resend_matches_the_live_branch() {
        let (live, shift) = resend("7 INVITE", 0).unwrap();
        let cancel = outgoing_request("7 CANCEL", FromCaller, shift)
            .unwrap()
            .unwrap();
        assert_eq!(
            Cseq::parse(&cancel).unwrap().number,
            Cseq::parse(&live).unwrap().number
        );
    }

    #[test]
    fn a_challenged_reinvite_raises_the_shift_again() {
        let (_, shift) = resend("1 INVITE", 0).unwrap();
        // re-INVITE 2 goes out as 3, is challenged, resent as 4: shift 2 from now on.
        let sent = outgoing_request("2 INVITE", FromCaller, shift)
            .unwrap()
            .unwrap();
        assert_eq!(sent, "3 INVITE");
        let (resent, shift) = resend(&sent, shift).unwrap();
        assert_eq!((resent.as_str(), shift), ("4 INVITE", 2));
        assert_eq!(
            incoming_reply("4 INVITE", FromCaller, shift)
                .unwrap()
                .as_deref(),
            Some("2 INVITE")
        );
        assert_eq!(
            outgoing_request("2 ACK", FromCaller, shift)
                .unwrap()
                .as_deref(),
            Some("4 ACK")
        );
    }

    #[test]
    fn the_callee_side_and_an_unshifted_dialog_are_untouched() {
        assert_eq!(outgoing_request("9 BYE", FromCallee, 3), Ok(None));
        assert_eq!(incoming_reply("9 BYE", FromCallee, 3), Ok(None));
        assert_eq!(outgoing_request("9 BYE", FromCaller, 0), Ok(None));
        assert_eq!(incoming_reply("9 BYE", FromCaller, 0), Ok(None));
    }

    #[test]
    fn bad_values_are_typed_errors() {
        for bad in [
            "",
            "INVITE",
            "1",
            "x INVITE",
            "-1 INVITE",
            "1 INVITE extra",
            "2147483648 BYE",
        ] {
            assert_eq!(
                outgoing_request(bad, FromCaller, 1),
                Err(CseqError::Malformed(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            resend("2147483647 INVITE", 0),
            Err(CseqError::Overflow {
                number: CSEQ_MAX,
                shift: 1
            })
        );
        assert_eq!(
            outgoing_request("2147483646 BYE", FromCaller, 2),
            Err(CseqError::Overflow {
                number: CSEQ_MAX - 1,
                shift: 2
            })
        );
        assert_eq!(
            incoming_reply("1 BYE", FromCaller, 2),
            Err(CseqError::Underflow {
                number: 1,
                shift: 2
            })
        );
    }

    #[test]
    fn whitespace_between_number_and_method_is_normalised() {
        assert_eq!(
            outgoing_request(" 4 \t BYE ", FromCaller, 1)
                .unwrap()
                .as_deref(),
            Some("5 BYE")
        );
    }
}
