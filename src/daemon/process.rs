//! What the daemon asks of the operating system: the open-file limit, giving memory back after
//! a burst, and who it runs as (for messages about files it cannot write).

/// Raises the soft limit on open files to the hard one (systemd's `LimitNOFILE=`, or the
/// shell's), and returns the limit in force.
pub(super) fn raise_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// Returns freed memory to the system after a burst (glibc keeps it otherwise).
pub(super) fn give_back_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The user a `postgres://user@host/db` URL connects as.
pub(super) fn database_role(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(credentials, _)| credentials.split(':').next().unwrap_or_default().to_owned())
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "(the server's default)".to_owned())
}

/// The user sipdesk runs as, for messages about files it cannot write.
pub(super) fn current_user() -> String {
    // SAFETY: geteuid cannot fail; getpwuid returns a pointer into static storage (or null),
    // read at once on this thread before any other call could overwrite it.
    unsafe {
        let uid = libc::geteuid();
        let entry = libc::getpwuid(uid);
        if entry.is_null() || (*entry).pw_name.is_null() {
            return format!("uid {uid}");
        }
        let name = std::ffi::CStr::from_ptr((*entry).pw_name).to_string_lossy();
        format!("{name} (uid {uid})")
    }
}
