//! Which shard of the proxy core owns a message: requests by Call-ID, responses by the shard
//! named in our branch on their top Via. Read from the raw bytes, before any parse.

use std::hash::{BuildHasher, Hasher};

use rustc_hash::FxBuildHasher;

use super::MAGIC_COOKIE;

/// Most shards a proxy may have: the shard is the low byte of the instance in our branches.
pub const MAX_SHARDS: usize = 256;

/// The shards of one proxy and the instance number their branches and tags carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct ShardMap {
    count: usize,
    /// Random high 24 bits shared by every shard; the low byte is the shard.
    base: u32,
}

impl ShardMap {
    pub(super) fn new(count: usize, random: u32) -> ShardMap {
        ShardMap {
            count: count.clamp(1, MAX_SHARDS),
            base: random & !0xff,
        }
    }

    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// The instance number shard `index` writes into its branches and tags.
    pub(super) fn instance(&self, index: usize) -> u32 {
        self.base | (index as u32 & 0xff)
    }

    /// The shard that owns `data`, or `None` when the message names no Call-ID (it is
    /// malformed; whoever read it answers it).
    pub(super) fn owner(&self, data: &[u8]) -> Option<usize> {
        if self.count == 1 {
            return Some(0);
        }
        let keys = Keys::scan(data);
        if let Some(shard) = keys.branch.and_then(|b| self.shard_of_branch(b)) {
            return Some(shard);
        }
        keys.call_id.map(|id| self.shard_of_call_id(id))
    }

    /// The shard for a Call-ID (locally originated requests are placed by it too).
    pub(super) fn shard_of_call_id(&self, call_id: &[u8]) -> usize {
        let mut hasher = FxBuildHasher.build_hasher();
        hasher.write(call_id);
        (hasher.finish() % self.count as u64) as usize
    }

    /// The shard that made `branch`, when one of ours did: `make_branch` writes the cookie,
    /// 16 hex digits of loop hash, then the 8 hex digits of the instance.
    fn shard_of_branch(&self, branch: &[u8]) -> Option<usize> {
        let rest = branch.strip_prefix(MAGIC_COOKIE.as_bytes())?;
        let digits = std::str::from_utf8(rest.get(16..24)?).ok()?;
        let instance = u32::from_str_radix(digits, 16).ok()?;
        let shard = (instance & 0xff) as usize;
        (instance & !0xff == self.base && shard < self.count).then_some(shard)
    }
}

/// The values a shard is picked by: the Call-ID, and for a response its top Via's branch.
#[derive(Debug, Default, PartialEq, Eq)]
struct Keys<'a> {
    call_id: Option<&'a [u8]>,
    branch: Option<&'a [u8]>,
}

impl<'a> Keys<'a> {
    fn scan(data: &'a [u8]) -> Keys<'a> {
        let mut keys = Keys::default();
        let mut lines = data.split(|&b| b == b'\n');
        let response = lines.next().is_some_and(|line| line.starts_with(b"SIP/"));
        let mut seen_via = false;
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = line[..colon].trim_ascii();
            let value = line[colon + 1..].trim_ascii();
            if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
                keys.call_id.get_or_insert(value);
            } else if response
                && !seen_via
                && (name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v"))
            {
                seen_via = true;
                keys.branch = top_via_branch(value);
            }
            if keys.call_id.is_some() && (seen_via || !response) {
                break;
            }
        }
        keys
    }
}

/// The branch parameter of the first Via in a Via header value.
fn top_via_branch(value: &[u8]) -> Option<&[u8]> {
    let first = value.split(|&b| b == b',').next()?;
    first.split(|&b| b == b';').skip(1).find_map(|param| {
        let (name, value) = param.split_at(param.iter().position(|&b| b == b'=')?);
        name.trim_ascii()
            .eq_ignore_ascii_case(b"branch")
            .then(|| value[1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::routing::make_branch;

    fn response(via: &str, call_id: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 200 OK\r\nVia: {via}\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKother\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn requests_go_by_call_id_whatever_their_via() {
        let map = ShardMap::new(4, 0x1234_5678);
        let branch = make_branch(7, map.instance(3), 1);
        let invite = format!(
            "INVITE sip:b@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch={branch}\r\n\
             i: abc@host\r\nCSeq: 1 INVITE\r\n\r\n"
        );
        let expected = map.shard_of_call_id(b"abc@host");
        assert_eq!(map.owner(invite.as_bytes()), Some(expected));
        // Retransmissions and the CANCEL of that INVITE land on the same shard.
        let cancel = invite
            .replace("INVITE sip", "CANCEL sip")
            .replace("i: ", "Call-ID:  ");
        assert_eq!(map.owner(cancel.as_bytes()), Some(expected));
    }

    #[test]
    fn responses_go_to_the_shard_that_made_their_branch() {
        let map = ShardMap::new(4, 0xabcd_ef00);
        for shard in 0..4 {
            let branch = make_branch(0xfeed, map.instance(shard), 99);
            let via = format!("SIP/2.0/UDP 127.0.0.1:5060;rport=5060;branch={branch};received=x");
            assert_eq!(map.owner(&response(&via, "c")), Some(shard), "{via}");
            // A compact header, several Vias in one value, odd spacing.
            let folded = format!("SIP/2.0/UDP 127.0.0.1 ; BRANCH = {branch} , SIP/2.0/UDP b");
            let text = String::from_utf8(response(&folded, "c")).expect("utf8");
            let compact = text.replacen("Via:", "v:", 1);
            assert_eq!(map.owner(compact.as_bytes()), Some(shard), "{compact}");
        }
    }

    #[test]
    fn a_foreign_or_stateless_branch_falls_back_to_the_call_id() {
        let map = ShardMap::new(3, 0x0101_0100);
        let other = ShardMap::new(3, 0x7777_7700);
        let by_call_id = map.shard_of_call_id(b"call-7");
        for branch in [
            make_branch(1, other.instance(1), 5),
            "z9hG4bK00000000000000aas".to_owned(),
            "z9hG4bKshort".to_owned(),
            make_branch(1, map.base | 9, 5),
        ] {
            let via = format!("SIP/2.0/UDP 127.0.0.1;branch={branch}");
            assert_eq!(
                map.owner(&response(&via, "call-7")),
                Some(by_call_id),
                "{branch}"
            );
        }
    }

    #[test]
    fn every_shard_gets_some_calls_and_one_shard_owns_everything_alone() {
        let map = ShardMap::new(2, 5);
        let owners: Vec<usize> = (0..64)
            .map(|i| map.shard_of_call_id(format!("{i}-call@host").as_bytes()))
            .collect();
        assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");
        let alone = ShardMap::new(1, 5);
        assert_eq!(alone.owner(b"garbage"), Some(0));
    }

    #[test]
    fn a_message_without_call_id_has_no_owner() {
        let map = ShardMap::new(2, 5);
        assert_eq!(map.owner(b"INVITE sip:x SIP/2.0\r\nVia: x\r\n\r\n"), None);
        assert_eq!(map.owner(b""), None);
        assert_eq!(map.owner(b"\xff\xfe:\r\n"), None);
    }
}
