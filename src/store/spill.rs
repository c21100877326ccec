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
use std::io::{BufRead, BufReader, Read, Write};
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

    /// Appends changes, one JSON line each, and syncs them to disk. A write that fails half-way
    /// (a full disk) is cut back, so no torn line is left to swallow the next one.
    pub fn append<'a>(&self, changes: impl IntoIterator<Item = &'a Change>) -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        let length = file.metadata()?.len();
        if length == 0 {
            // A new file: its directory entry reaches the disk too, or a power cut could lose
            // the file whose lines were synced.
            if let Some(dir) = self.path.parent() {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
        }
        let mut buffer = Vec::new();
        if length > 0 && !ends_with_newline(&mut file, length)? {
            // What a crash in the middle of a line left: end it, so it stays one bad line.
            buffer.push(b'\n');
        }
        for change in changes {
            serde_json::to_writer(&mut buffer, change).map_err(std::io::Error::other)?;
            buffer.push(b'\n');
        }
        let written = file.write_all(&buffer).and_then(|()| file.sync_data());
        if written.is_err() {
            let _ = file.set_len(length);
        }
        written
    }

    /// A reader of the file's changes, oldest first; `None` when there is no file.
    pub fn reader(&self) -> std::io::Result<Option<SpillReader>> {
        match File::open(&self.path) {
            Ok(file) => Ok(Some(SpillReader {
                lines: BufReader::new(file),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Moves the file aside (it cannot be read), returning where to.
    pub fn set_aside(&self) -> std::io::Result<PathBuf> {
        let stamp = jiff::Timestamp::now().as_second();
        let to = self
            .path
            .with_extension(format!("jsonl.unreadable-{stamp}"));
        std::fs::rename(&self.path, &to)?;
        Ok(to)
    }

    /// Removes the file once its changes are written.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

fn ends_with_newline(file: &mut File, length: u64) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(length - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Reads a spill file a batch at a time.
pub struct SpillReader {
    lines: BufReader<File>,
}

impl SpillReader {
    /// Up to `n` more changes, and how many unreadable lines were skipped on the way; an empty
    /// batch at the end of the file.
    pub fn next_batch(&mut self, n: usize) -> std::io::Result<(Vec<Change>, usize)> {
        let mut changes = Vec::new();
        let mut unreadable = 0;
        let mut line = Vec::new();
        while changes.len() < n {
            line.clear();
            if self.lines.read_until(b'\n', &mut line)? == 0 {
                break;
            }
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

    fn read_all(spill: &Spill) -> (Vec<Change>, usize) {
        let mut reader = spill.reader().unwrap().unwrap();
        let mut all = Vec::new();
        let mut bad = 0;
        loop {
            let (batch, unreadable) = reader.next_batch(2).unwrap();
            bad += unreadable;
            if batch.is_empty() {
                return (all, bad);
            }
            all.extend(batch);
        }
    }

    #[test]
    fn changes_come_back_in_order_and_a_torn_line_costs_only_itself() {
        let dir = std::env::temp_dir().join(format!("sipdesk-spill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spill = Spill::in_directory(&dir);
        spill.remove().unwrap();
        assert!(!spill.exists());
        assert!(spill.reader().unwrap().is_none());
        let first = [event(1, "ringing 2001"), event(2, "with a \0 inside")];
        spill.append(&first).unwrap();
        // A crash in the middle of a line...
        let mut file = OpenOptions::new().append(true).open(spill.path()).unwrap();
        file.write_all(b"{\"change\":\"event\",\"call_").unwrap();
        // ... and the next append still starts on a line of its own.
        spill.append(&[event(3, "answered")]).unwrap();
        let (changes, unreadable) = read_all(&spill);
        assert_eq!(unreadable, 1);
        assert_eq!(
            changes,
            vec![
                event(1, "ringing 2001"),
                event(2, "with a \0 inside"),
                event(3, "answered")
            ]
        );
        let aside = spill.set_aside().unwrap();
        assert!(!spill.exists() && aside.exists());
        std::fs::remove_file(aside).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
