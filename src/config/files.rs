//! Reading the user's own files (pipeline and connections files, passcode and secret files)
//! with a size limit, refusing what is not a regular file: a path that points at
//! `/dev/zero` or a FIFO ends in a clear error, not in memory growing or a read that hangs.

use std::io::Read;
use std::path::Path;

/// The largest pipeline or connections file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The largest passcode, password or key file read.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// What a path is when it is not a regular file, for messages: `a folder`, `a FIFO`, ...
/// `None` for a regular file (or a path that cannot be looked at: opening it says why).
pub fn not_a_regular_file(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path).ok()?.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a folder")
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Whether other users of the machine may read the file (its mode has the "others read" bit).
pub fn readable_by_everyone(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o004 != 0)
}

/// Reads a whole regular file of at most `limit` bytes. The error says why in words that
/// follow the file's name ("it is a folder, ...").
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    if let Some(kind) = not_a_regular_file(path) {
        return Err(format!("it is {kind}, not a regular file"));
    }
    let file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| error.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "it is larger than {} KiB, too large for this kind of file",
            limit / 1024
        ));
    }
    Ok(bytes)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_text_limited(path: &Path, limit: u64) -> Result<String, String> {
    let bytes = read_limited(path, limit)?;
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_folders_and_big_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_limited(Path::new("/dev/zero"), MAX_SECRET_BYTES).unwrap_err();
        assert!(error.contains("is a device"), "{error}");
        let error = read_limited(dir.path(), MAX_SECRET_BYTES).unwrap_err();
        assert!(error.contains("is a folder"), "{error}");
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let error = read_limited(&fifo, MAX_SECRET_BYTES).unwrap_err();
        assert!(error.contains("FIFO"), "{error}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 70 * 1024]).unwrap();
        let error = read_limited(&big, MAX_SECRET_BYTES).unwrap_err();
        assert!(error.contains("larger than 64 KiB"), "{error}");
        std::fs::write(&big, "secret\n").unwrap();
        assert_eq!(
            read_text_limited(&big, MAX_SECRET_BYTES).unwrap(),
            "secret\n"
        );
    }
}
