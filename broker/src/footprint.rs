//! The broker's idle memory: once every shard serves, the pages of the
//! executable that only start-up touched (argument parsing, configuration,
//! the controller's bootstrap, relocation tables) are handed back to the
//! kernel, as an operating system frees its init code after boot.

/// Asks the kernel to reclaim this process's pages of its own executable
/// file (`MADV_PAGEOUT`, Linux 5.4 and newer). Those pages are clean copies
/// of the file: code that runs again faults them back in, from the page
/// cache or the disk, so only a first call to a path pays, once, a few
/// page faults. Nothing changes for writable or anonymous memory (without
/// swap the kernel leaves them). Returns the bytes of the ranges advised;
/// errors (an older kernel, /proc not mounted) leave memory as it was.
pub fn release_startup_pages() -> usize {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for (start, end) in executable_ranges(&maps, &exe.to_string_lossy()) {
        let len = end - start;
        // SAFETY: the range is a mapping of this process (from its own
        // maps); MADV_PAGEOUT only drops clean file pages from it, and the
        // contents stay what the file says.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
        if rc == 0 {
            advised += len;
        }
    }
    advised
}

/// The read-only mappings of `exe` in a `/proc/self/maps` text: code,
/// read-only data and relocation tables, never the writable data.
fn executable_ranges<'a>(maps: &'a str, exe: &'a str) -> impl Iterator<Item = (usize, usize)> + 'a {
    maps.lines().filter_map(move |line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        let path = fields.nth(3)?;
        if path != exe || perms.contains('w') {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (end > start).then_some((start, end))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_read_only_mappings_are_chosen() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 42 /usr/bin/sluice
55d0c0100000-55d0c0900000 r-xp 00100000 fe:00 42 /usr/bin/sluice
55d0c0900000-55d0c0980000 rw-p 00900000 fe:00 42 /usr/bin/sluice
55d0c0980000-55d0c0990000 r--p 00000000 fe:00 43 /usr/lib/libc.so.6
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
7f0000200000-7f0000201000 r--p 00000000 fe:00 42 /usr/bin/sluice-old
";
        let ranges: Vec<_> = executable_ranges(maps, "/usr/bin/sluice").collect();
        assert_eq!(
            ranges,
            vec![
                (0x55d0c0000000, 0x55d0c0100000),
                (0x55d0c0100000, 0x55d0c0900000)
            ]
        );
    }

    #[test]
    fn releasing_keeps_the_process_running() {
        // The test binary's own code is paged out; the assertion below
        // runs code that must fault back in.
        let advised = release_startup_pages();
        assert!(advised > 0 || !std::path::Path::new("/proc/self/maps").exists());
        assert_eq!(executable_ranges("", "x").count(), 0);
    }
}
