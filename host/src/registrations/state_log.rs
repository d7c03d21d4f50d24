//! The live-state log: each change of a record's live state is appended to a file at
//! once, and the file is emptied once the database holds those changes.
//!
//! The database is written in batches, once a second: a process killed in between
//! would lose the last second's outcomes and register those accounts again after a
//! restart although their bindings are valid. The file is mapped shared, so an append
//! is a copy into the page cache, which survives a killed process, with no system call
//! (a `write` per change was 4% of a refresh's CPU); a restart replays it over the table.
//! The mapped file is longer than what it holds: the rest is zeros, and reading stops at
//! the first.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::record::LiveState;

/// The mapped length to begin with, and the step it grows by (entries are ~100 bytes).
const CHUNK: usize = 1 << 20;

/// One tenant's log file, mapped for appending.
#[derive(Debug)]
pub struct StateLog {
    path: PathBuf,
    file: File,
    region: Mutex<Region>,
}

/// The file's shared mapping and how much of it holds entries.
#[derive(Debug)]
struct Region {
    ptr: *mut u8,
    len: usize,
    used: usize,
}

// SAFETY: the mapping is owned by the region alone and only touched under its mutex.
unsafe impl Send for Region {}

impl Region {
    /// Maps the first `len` bytes of `file`, which must be at least that long.
    fn map(file: &File, len: usize, used: usize) -> io::Result<Region> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of a file we keep open, never aliased by a Rust
        // reference outside this type; the file is at least `len` bytes (set by the caller).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            ptr: ptr.cast(),
            len,
            used,
        })
    }

    /// Copies `bytes` after what the region holds; false when they do not fit.
    fn push(&mut self, bytes: &[u8]) -> bool {
        if self.len - self.used < bytes.len() {
            return false;
        }
        // SAFETY: `used + bytes.len() <= len`, inside the mapping; `bytes` is not in it.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.used), bytes.len())
        };
        self.used += bytes.len();
        true
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// What a log held: the entries in the order written, and how many lines could not
/// be read (a torn last line, or a file that is not a state log).
#[derive(Debug, Default, PartialEq)]
pub struct Replay {
    pub entries: Vec<LogEntry>,
    pub unreadable: usize,
}

/// One logged change: the record (by `l_uuid` and the row's content hash, so an edited
/// row does not take the state of its former self) and its new live state.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub l_uuid: String,
    pub row_hash: i64,
    pub state: LiveState,
}

/// First field of every line: a log of another layout is not misread.
const VERSION: &str = "v1";

impl StateLog {
    /// Opens (creating it and its directory) the log at `path`; what it holds stays
    /// until [`clear`](Self::clear).
    pub fn open(path: &Path) -> io::Result<StateLog> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        lock_exclusively(&file)?;
        let held = std::fs::read(path)?;
        let used = held_len(&held);
        let len = (used + CHUNK).next_multiple_of(CHUNK);
        file.set_len(len as u64)?;
        let mut region = Region::map(&file, len, used)?;
        if used > 0 && held[used - 1] != b'\n' {
            // A copy cut short by a kill: end its line, so the next entry is not joined
            // to it (the torn line is then skipped as unreadable).
            region.push(b"\n");
        }
        Ok(StateLog {
            path: path.to_owned(),
            file,
            region: Mutex::new(region),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one change: a copy into the mapping, which grows by [`CHUNK`]s.
    pub fn append(&self, l_uuid: &str, row_hash: i64, state: &LiveState) -> io::Result<()> {
        let line = encode(l_uuid, row_hash, state);
        let mut region = self.lock();
        if !region.push(line.as_bytes()) {
            let used = region.used;
            let len = (used + line.len() + CHUNK).next_multiple_of(CHUNK);
            self.file.set_len(len as u64)?;
            *region = Region::map(&self.file, len, used)?;
            region.push(line.as_bytes());
        }
        Ok(())
    }

    /// Empties the log: the database holds everything it had. The file is cut to
    /// nothing (its pages dropped) and mapped again at [`CHUNK`].
    pub fn clear(&self) -> io::Result<()> {
        let mut region = self.lock();
        if region.used == 0 {
            return Ok(());
        }
        self.file.set_len(0)?;
        self.file.set_len(CHUNK as u64)?;
        *region = Region::map(&self.file, CHUNK, 0)?;
        Ok(())
    }

    /// Reads every entry back, oldest first.
    pub fn read(&self) -> io::Result<Replay> {
        read_log(&self.path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Region> {
        // A panic cannot leave a region half-updated: `used` moves after the copy.
        self.region.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads the entries of the log file at `path`, oldest first (also while a [`StateLog`]
/// holds it: the mapping is shared).
pub fn read_log(path: &Path) -> io::Result<Replay> {
    let held = std::fs::read(path)?;
    let mut replay = Replay::default();
    let held = &held[..held_len(&held)];
    for line in held.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match std::str::from_utf8(line).ok().and_then(decode) {
            Some(entry) => replay.entries.push(entry),
            None => replay.unreadable += 1,
        }
    }
    Ok(replay)
}

/// Takes the log for this open file alone: two logs mapping one file would write over each
/// other's entries, and one cutting the file would leave the other's mapping past its end
/// (a SIGBUS at its next append). Two tenants given the same `live_state_log`, or two
/// processes, are refused at open instead.
fn lock_exclusively(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: an advisory lock on a descriptor we own; released when it is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.kind() == io::ErrorKind::WouldBlock {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "in use by another tenant or process (each needs a log of its own)",
        ));
    }
    Err(error)
}

/// How much of a log file holds entries: up to the first zero byte (the mapped rest).
fn held_len(bytes: &[u8]) -> usize {
    bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())
}

fn encode(l_uuid: &str, row_hash: i64, s: &LiveState) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(96 + l_uuid.len() + s.call_id.len());
    // Writing to a String cannot fail.
    let _ = writeln!(
        line,
        "{VERSION}\t{}\t{row_hash}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        escape(l_uuid),
        s.flags,
        s.expires,
        s.registered_until,
        escape(&s.call_id),
        s.cseq,
        s.last_status,
        escape(&s.last_reason),
        s.failures,
        s.next_due_ms,
    );
    line
}

fn decode(line: &str) -> Option<LogEntry> {
    let mut fields = line.split('\t');
    if fields.next()? != VERSION {
        return None;
    }
    let mut next = || fields.next();
    let entry = LogEntry {
        l_uuid: unescape(next()?)?,
        row_hash: next()?.parse().ok()?,
        state: LiveState {
            flags: next()?.parse().ok()?,
            expires: next()?.parse().ok()?,
            registered_until: next()?.parse().ok()?,
            call_id: unescape(next()?)?,
            cseq: next()?.parse().ok()?,
            last_status: next()?.parse().ok()?,
            last_reason: unescape(next()?)?,
            failures: next()?.parse().ok()?,
            next_due_ms: next()?.parse().ok()?,
        },
    };
    next().is_none().then_some(entry)
}

/// Tabs, line ends and backslashes of a text field as `\t`, `\n`, `\r`, `\\`.
fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['\t', '\n', '\r', '\\']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn unescape(field: &str) -> Option<String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            '\\' => '\\',
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: u64) -> LiveState {
        LiveState {
            flags: 3,
            expires: 3600,
            registered_until: 1_795_000_000 + n,
            call_id: format!("call-{n}@siphost"),
            cseq: 7,
            last_status: 200,
            last_reason: "OK".to_owned(),
            failures: 0,
            next_due_ms: 1_795_000_000_000 + n,
        }
    }

    #[test]
    fn entries_come_back_in_order_and_clear_empties_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/uac.db.default.live-state.log");
        let log = StateLog::open(&path).expect("open");
        log.append("a", -5, &state(1)).expect("append");
        log.append("b", 9, &state(2)).expect("append");
        log.append("a", -5, &state(3)).expect("append");
        let replay = log.read().expect("read");
        assert_eq!(replay.unreadable, 0);
        let got: Vec<_> = replay
            .entries
            .iter()
            .map(|e| (e.l_uuid.as_str(), e.row_hash, e.state.registered_until))
            .collect();
        assert_eq!(
            got,
            [
                ("a", -5, 1_795_000_001),
                ("b", 9, 1_795_000_002),
                ("a", -5, 1_795_000_003)
            ]
        );
        assert_eq!(replay.entries[2].state, state(3));
        log.clear().expect("clear");
        assert_eq!(log.read().expect("read").entries, []);
        // Appends after a clear start the file again.
        log.append("c", 1, &state(4)).expect("append");
        drop(log);
        let reopened = StateLog::open(&path).expect("reopen");
        assert_eq!(reopened.read().expect("read").entries.len(), 1);
    }

    #[test]
    fn text_fields_with_tabs_line_ends_and_backslashes_round_trip() {
        let mut odd = state(1);
        odd.last_reason = "Forbidden\t(bad\\password)\r\nreally".to_owned();
        odd.call_id = String::new();
        let line = encode("uuid\twith\ttabs\\", i64::MIN, &odd);
        assert_eq!(
            line.matches('\n').count(),
            1,
            "one line per entry: {line:?}"
        );
        let entry = decode(line.trim_end_matches('\n')).expect("decodes");
        assert_eq!(entry.l_uuid, "uuid\twith\ttabs\\");
        assert_eq!(entry.row_hash, i64::MIN);
        assert_eq!(entry.state, odd);
    }

    #[test]
    fn a_torn_or_foreign_line_is_counted_and_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let log = StateLog::open(&path).expect("open");
        log.append("a", 1, &state(1)).expect("append");
        drop(log);
        // Lines of another layout or with a bad escape, then a copy cut short by a kill
        // (the mapped rest of the file stays zeros).
        let mut held = std::fs::read(&path).expect("read");
        let used = held_len(&held);
        let whole = encode("b", 2, &state(2));
        let mut tail = b"v2\tnew\tlayout\nv1\tbad\\q\n".to_vec();
        tail.extend_from_slice(&whole.as_bytes()[..whole.len() / 2]);
        held[used..used + tail.len()].copy_from_slice(&tail);
        std::fs::write(&path, &held).expect("write");
        let log = StateLog::open(&path).expect("reopen");
        log.append("c", 3, &state(3)).expect("append");
        let replay = log.read().expect("read");
        let uuids: Vec<_> = replay.entries.iter().map(|e| e.l_uuid.as_str()).collect();
        assert_eq!(uuids, ["a", "c"], "the entry after the torn one is whole");
        assert_eq!(replay.unreadable, 3);
    }

    #[test]
    fn a_second_log_on_the_same_file_is_refused_until_the_first_is_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let log = StateLog::open(&path).expect("open");
        log.append("a", 1, &state(1)).expect("append");
        let refused = StateLog::open(&path).expect_err("a second log on the file");
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
        assert!(refused.to_string().contains("in use"), "{refused}");
        assert_eq!(log.read().expect("read").entries.len(), 1, "nothing lost");
        drop(log);
        let reopened = StateLog::open(&path).expect("reopen after close");
        assert_eq!(reopened.read().expect("read").entries.len(), 1);
    }

    #[test]
    fn the_mapping_grows_past_its_first_chunk_and_a_clear_empties_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let log = StateLog::open(&path).expect("open");
        let line = encode("a", 1, &state(1)).len();
        let n = 2 * CHUNK / line + 3;
        for i in 0..n {
            log.append(&format!("u{i}"), 1, &state(i as u64))
                .expect("append");
        }
        assert!(std::fs::metadata(&path).expect("stat").len() > 2 * CHUNK as u64);
        let replay = log.read().expect("read");
        assert_eq!(replay.unreadable, 0);
        assert_eq!(replay.entries.len(), n);
        assert_eq!(replay.entries[n - 1].state, state(n as u64 - 1));
        // A reader of the file sees the same (the mapping is shared).
        assert_eq!(read_log(&path).expect("read").entries.len(), n);
        log.clear().expect("clear");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), CHUNK as u64);
        assert_eq!(log.read().expect("read"), Replay::default());
        log.append("z", 1, &state(9)).expect("append");
        assert_eq!(log.read().expect("read").entries.len(), 1);
    }
}
