//! The live-state log: each change of a record's live state is appended to a file at
//! once, and the file is emptied once the database holds those changes.
//!
//! The database is written in batches, once a second: a process killed in between
//! would lose the last second's outcomes and register those accounts again after a
//! restart although their bindings are valid. An append is one `write` to the page
//! cache, which survives a killed process; a restart replays the log over the table.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::record::LiveState;

/// One tenant's log file, opened for appending.
#[derive(Debug)]
pub struct StateLog {
    path: PathBuf,
    file: File,
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
    /// Opens (creating it and its directory) the log at `path`.
    pub fn open(path: &Path) -> io::Result<StateLog> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(StateLog {
            path: path.to_owned(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one change in a single `write`.
    pub fn append(&self, l_uuid: &str, row_hash: i64, state: &LiveState) -> io::Result<()> {
        let line = encode(l_uuid, row_hash, state);
        (&self.file).write_all(line.as_bytes())
    }

    /// Empties the log: the database holds everything it had.
    pub fn clear(&self) -> io::Result<()> {
        self.file.set_len(0)
    }

    /// Reads every entry back, oldest first.
    pub fn read(&self) -> io::Result<Replay> {
        let mut replay = Replay::default();
        for line in BufReader::new(File::open(&self.path)?).split(b'\n') {
            let line = line?;
            match std::str::from_utf8(&line).ok().and_then(decode) {
                Some(entry) => replay.entries.push(entry),
                None => replay.unreadable += 1,
            }
        }
        Ok(replay)
    }
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
        let whole = encode("b", 2, &state(2));
        // A write cut short, then lines of another layout or with a bad escape.
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&whole.as_bytes()[..whole.len() / 2])
            .expect("write");
        file.write_all(b"\nv2\tnew\tlayout\nv1\tbad\\q\n")
            .expect("write");
        log.append("c", 3, &state(3)).expect("append");
        let replay = log.read().expect("read");
        let uuids: Vec<_> = replay.entries.iter().map(|e| e.l_uuid.as_str()).collect();
        assert_eq!(uuids, ["a", "c"]);
        assert_eq!(replay.unreadable, 3);
    }
}
