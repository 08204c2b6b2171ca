//! Start-up's code leaves the process's resident memory once the gateway runs.
//!
//! Why: the kernel keeps every page of the executable it has mapped for the
//! process, 64 KiB around each page fault. Start-up (the config, the
//! migrations, Pingora's bootstrap, the tokenizer tables...) runs ~1.4 MiB of
//! code that does not run again, and the release build lays its functions out
//! after the ones the running gateway uses (`benches/symbol-order.sh`). So
//! once start-up is over, the executable's pages are dropped from the
//! process's page tables, and only the running code faults back, in the few
//! 64 KiB windows it fills (benches/README.md, "Hashing, and start-up's pages").
//!
//! `MADV_DONTNEED` on a read-only file mapping only unmaps: the pages stay in
//! the page cache, so a fault maps them again without reading the disk. A
//! private mapping that holds copies of its own (RELRO, written by the loader's
//! relocations and then made read-only) would lose them and read the file's
//! unrelocated bytes, so a mapping with any anonymous page is left alone.

/// Drops the pages of the executable's read-only mappings that hold nothing
/// but the file's bytes; returns how many bytes were advised.
pub fn release() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for (start, end) in file_only_mappings(&smaps, &exe.to_string_lossy()) {
        // SAFETY: the range is one whole mapping of the executable that is not
        // writable and holds no private (anonymous) page, so dropping its pages
        // loses nothing: each is read back from the same file on its next use.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        released += end - start;
    }
    Ok(released)
}

/// The address ranges in `smaps` that map `path` read-only (`r--p`, `r-xp`)
/// with no anonymous page.
fn file_only_mappings(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    mappings(smaps)
        .into_iter()
        .filter(|m| m.path == path && matches!(m.perms, "r--p" | "r-xp") && m.anonymous_kib == 0)
        .map(|m| m.range)
        .collect()
}

/// One mapping of `/proc/PID/smaps`, with the figures read here.
struct Mapping<'a> {
    range: (usize, usize),
    perms: &'a str,
    path: String,
    rss_kib: u64,
    anonymous_kib: u64,
}

/// Every mapping in `smaps`: a line `start-end perms offset device inode
/// path` (the path may hold spaces), then `Name:   N kB` lines.
fn mappings(smaps: &str) -> Vec<Mapping<'_>> {
    let mut found: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(first) = fields.first() else {
            continue;
        };
        let range = first.split_once('-').and_then(|(s, e)| {
            Some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        });
        if let Some(range) = range {
            found.push(Mapping {
                range,
                perms: fields.get(1).copied().unwrap_or_default(),
                path: fields.get(5..).map(|p| p.join(" ")).unwrap_or_default(),
                rss_kib: 0,
                anonymous_kib: 0,
            });
        } else if let Some(mapping) = found.last_mut() {
            let kib: Option<u64> = fields.get(1).and_then(|n| n.parse().ok());
            match *first {
                "Rss:" => mapping.rss_kib = kib.unwrap_or(0),
                // Unreadable counts as private: such a mapping is kept.
                "Anonymous:" => mapping.anonymous_kib = kib.unwrap_or(u64::MAX),
                _ => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident kB of the test binary's executable code.
    fn resident_code_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_string_lossy();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        mappings(&smaps)
            .iter()
            .filter(|m| m.perms == "r-xp" && m.path == exe)
            .map(|m| m.rss_kib)
            .sum()
    }

    #[test]
    fn the_executables_code_leaves_resident_memory_and_runs_on() {
        // The test harness and the tests that ran before have touched the
        // test binary's code; released, only what runs next comes back.
        let before = resident_code_kib();
        assert!(
            before >= 256,
            "only {before} KiB of code resident to begin with"
        );
        let released = release().expect("madvise");
        assert!(released > 0);
        let after = resident_code_kib();
        assert!(
            after * 2 < before,
            "resident code {before} KiB before the release, {after} KiB after"
        );
    }

    #[test]
    fn mappings_with_private_copies_or_write_access_are_kept() {
        let smaps = "\
55d000000000-55d000100000 r--p 00000000 fd:01 42 /opt/bm/bluesminds
Rss:                 400 kB
Anonymous:             0 kB
55d000100000-55d000400000 r-xp 00100000 fd:01 42 /opt/bm/bluesminds
Anonymous:             0 kB
55d000400000-55d000480000 r--p 00400000 fd:01 42 /opt/bm/bluesminds
Anonymous:           512 kB
55d000480000-55d000490000 rw-p 00480000 fd:01 42 /opt/bm/bluesminds
Anonymous:            56 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 r--p 00000000 fd:01 99 /opt/bm/my data.bin
Anonymous:             0 kB
";
        assert_eq!(
            file_only_mappings(smaps, "/opt/bm/bluesminds"),
            [
                (0x55d000000000, 0x55d000100000),
                (0x55d000100000, 0x55d000400000)
            ]
        );
        // A path with spaces is matched whole.
        assert_eq!(
            file_only_mappings(smaps, "/opt/bm/my data.bin"),
            [(0x7f0000200000, 0x7f0000300000)]
        );
    }
}
