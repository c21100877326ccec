//! A small file system of the test's own (an ext4 image loop-mounted on a fresh directory), to
//! put the database on a disk that fills up or turns read-only (`chattr +i`) on demand. Mounting
//! needs root: the machines and CI run the tests as root. Elsewhere such a test fails, unless
//! `SIPDESK_TEST_SKIP_MOUNTS=1` says to skip it, which it then says loudly.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) struct SmallFs {
    pub(crate) dir: PathBuf,
    image: PathBuf,
}

impl SmallFs {
    /// Mounts an ext4 file system of `size` (`"16M"`) on a fresh directory; `None` (said
    /// loudly) when this process may not mount.
    pub(crate) fn mount(name: &str, size: &str) -> Option<SmallFs> {
        let dir = super::daemon::test_dir(name);
        let image = dir.with_extension("ext4");
        let run = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let image_path = image.display().to_string();
        let dir_path = dir.display().to_string();
        let mounted = run("truncate", &["-s", size, &image_path])
            // No blocks reserved for root: the tests run as root and must see the disk full.
            && run("mkfs.ext4", &["-q", "-F", "-m", "0", &image_path])
            && run("mount", &["-o", "loop", &image_path, &dir_path])
            && run("chmod", &["0777", &dir_path]);
        if !mounted {
            let _ = std::fs::remove_file(&image);
            assert!(
                std::env::var_os("SIPDESK_TEST_SKIP_MOUNTS").is_some(),
                "{name} needs to loop-mount an ext4 image: run the tests as root, or set SIPDESK_TEST_SKIP_MOUNTS=1 to skip it"
            );
            eprintln!(
                "\n*** SKIPPED: {name} needs to loop-mount an ext4 image (SIPDESK_TEST_SKIP_MOUNTS is set) ***\n"
            );
            return None;
        }
        Some(SmallFs { dir, image })
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Fills the file system to the last byte.
    pub(crate) fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.path("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
        // dd stops at the first full block; the last bytes go one at a time.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1", "oflag=append", "conv=notrunc"])
            .arg(format!("of={}", self.path("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// Frees what [`SmallFs::fill`] took.
    pub(crate) fn free(&self) {
        let _ = std::fs::remove_file(self.path("filler"));
    }

    /// Makes the SQLite database `name` (its file and its write-ahead log) immutable: nothing
    /// can be written to them, even by root. Its shared-memory index stays writable, as it does
    /// when an admin runs `chattr +i` on the database.
    pub(crate) fn read_only(&self, name: &str, yes: bool) {
        let flag = if yes { "+i" } else { "-i" };
        let files = [self.path(name), self.path(&format!("{name}-wal"))];
        let out = Command::new("chattr")
            .arg(flag)
            .args(files.iter().filter(|f| f.exists()))
            .output()
            .expect("chattr runs");
        assert!(
            out.status.success(),
            "chattr {flag} {}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let quiet = |program: &str, args: &[&str]| {
            let _ = Command::new(program)
                .args(args)
                .arg(&self.dir)
                .stderr(std::process::Stdio::null())
                .status();
        };
        quiet("chattr", &["-R", "-i"]);
        quiet("umount", &["-l"]);
        let _ = std::fs::remove_file(&self.image);
    }
}
