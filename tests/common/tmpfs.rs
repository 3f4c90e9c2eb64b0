//! Small tmpfs filesystems a test mounts (as root) to fill up and free again: the disk-full
//! faults of issue 19 (`tests/faults.rs`, `tests/siem_faults.rs`).

#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs of a fixed size mounted on a directory; unmounted when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (mount(8) syntax, e.g. `1m`) on `dir`, created if missing.
    /// `None` (after a loud message naming `test`) when mounting is not permitted here; under
    /// `CI` a refused mount fails the test instead.
    pub fn mount(dir: &Path, size: &str, test: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output();
        let why = match out {
            Ok(o) if o.status.success() => {
                return Some(Tmpfs {
                    dir: dir.to_path_buf(),
                });
            }
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        let message = format!("SKIPPED {test}: cannot mount a tmpfs ({why}); run as root");
        assert!(std::env::var_os("CI").is_none(), "{message}");
        // Straight to the process's stderr: the harness captures `eprintln!` of a passing
        // test, and this skip must be seen.
        let _ = writeln!(std::io::stderr().lock(), "\n*** {message} ***\n");
        None
    }

    /// Fill the filesystem: a filler file grows until the kernel says no space is left.
    pub fn fill(&self) {
        let path = self.filler();
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x55u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // Also the last few bytes a 4 KiB write could not take.
        while let Ok(n) = f.write(&[0x55]) {
            if n == 0 {
                break;
            }
        }
        let _ = f.sync_all();
    }

    /// Give the space back.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    pub fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// The names in the mount, the filler excepted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "filler")
            .collect();
        names.sort();
        names
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon still holding a file open must not keep the mount behind.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}
