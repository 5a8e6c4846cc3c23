//! Reads that survive a transient I/O error.

/// The waits before each retry of a file read that failed with an I/O error (a network file
/// system's hiccup, a file moved back a moment later): a transient error must not become a
/// file listed as bad for good (`data.on_error = "skip"`), or a resumed run would train on
/// other data than an uninterrupted one. Decode errors are never retried.
pub const RETRY_DELAYS: &[std::time::Duration] = &[
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(250),
    std::time::Duration::from_millis(1000),
];

/// `op`, tried again after each of `delays` while it fails.
pub fn retry_io<T>(
    delays: &[std::time::Duration],
    mut op: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut waits = delays.iter();
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) => match waits.next() {
                Some(d) => std::thread::sleep(*d),
                None => return Err(e),
            },
        }
    }
}
