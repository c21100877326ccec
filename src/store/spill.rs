//! The spill file: call records and events the database could not take, kept as JSON lines in
//! the state directory (`unwritten-records.jsonl`) until it can. The writer appends to it when
//! more changes wait than `queue_limit` allows in memory, and on stop with whatever it could not
//! write within `stop_write_timeout`; the next start (or the writer, once the database is back)
//! writes the file's changes and removes it.
//!
//! Writing a change twice is harmless (starts and events are inserted once, a final record is
//! the same upsert, a delivery exists once), so a crash between writing the file's changes and
//! removing it costs nothing. A line that cannot be read (a crash while appending) is skipped
//! with a warning; every whole line is kept.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::call::Change;

/// The file's name in the state directory.
pub const FILE_NAME: &str = "unwritten-records.jsonl";

/// The spill file of one state directory.
#[derive(Clone, Debug)]
pub struct Spill {
    path: PathBuf,
}

impl Spill {
    pub fn in_directory(state_directory: &Path) -> Spill {
        Spill {
            path: state_directory.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether there is anything to write back.
    pub fn exists(&self) -> bool {
        self.path.metadata().is_ok_and(|m| m.len() > 0)
    }

    /// Appends changes, one JSON line each, and syncs them to disk.
    pub fn append<'a>(&self, changes: impl IntoIterator<Item = &'a Change>) -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut buffer = Vec::new();
        for change in changes {
            serde_json::to_writer(&mut buffer, change).map_err(std::io::Error::other)?;
            buffer.push(b'\n');
        }
        file.write_all(&buffer)?;
        file.sync_data()
    }

    /// Every change in the file, oldest first; unreadable lines are skipped (and counted).
    pub fn read(&self) -> std::io::Result<(Vec<Change>, usize)> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        let mut changes = Vec::new();
        let mut unreadable = 0;
        for line in BufReader::new(file).split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Change>(&line) {
                Ok(change) => changes.push(change),
                Err(_) => unreadable += 1,
            }
        }
        Ok((changes, unreadable))
    }

    /// Removes the file once its changes are written.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallEvent;

    fn event(seq: u64, detail: &str) -> Change {
        Change::Event(CallEvent {
            call_id: "c1".into(),
            seq,
            at: jiff::Timestamp::UNIX_EPOCH,
            kind: "offered".into(),
            detail: detail.into(),
        })
    }

    #[test]
    fn changes_come_back_in_order_and_a_torn_last_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("sipdesk-spill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spill = Spill::in_directory(&dir);
        spill.remove().unwrap();
        assert!(!spill.exists());
        let first = [event(1, "ringing 2001"), event(2, "with a \0 inside")];
        spill.append(&first).unwrap();
        spill.append(&[event(3, "answered")]).unwrap();
        // A crash in the middle of a line.
        let mut file = OpenOptions::new().append(true).open(spill.path()).unwrap();
        file.write_all(b"{\"change\":\"event\",\"call_").unwrap();
        let (changes, unreadable) = spill.read().unwrap();
        assert_eq!(unreadable, 1);
        assert_eq!(
            changes,
            vec![
                event(1, "ringing 2001"),
                event(2, "with a \0 inside"),
                event(3, "answered")
            ]
        );
        spill.remove().unwrap();
        assert!(!spill.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
