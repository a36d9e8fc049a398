//! Bounded reading of the files configuration comes from: config files, `{ file: }` secrets and
//! `.env`. Only regular files are read (a FIFO would block, `/dev/zero` never ends), and never more
//! than a cap plus one byte.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Largest config file read (`--config`): 1 MiB.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// Largest secret file read (`{ file: PATH }`): 64 KiB.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Largest `.env` file read: 1 MiB.
pub const MAX_ENV_FILE_BYTES: u64 = 1024 * 1024;

/// Why an input file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputFileError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a regular file: a directory, FIFO, device or socket.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// Larger than the cap.
    #[error("it is larger than the {} limit{}", Bytes(*.limit), .size.map(|s| format!(" ({} bytes)", s)).unwrap_or_default())]
    TooLarge {
        /// The cap, bytes.
        limit: u64,
        /// The size the file system reports, when it reports one over the cap.
        size: Option<u64>,
    },
    /// Not UTF-8 text.
    #[error("it is not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
}

/// Bytes as `1 MiB`, `64 KiB` or `N bytes`.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1024 * 1024 && b % (1024 * 1024) == 0 {
            write!(f, "{} MiB", b / (1024 * 1024))
        } else if b >= 1024 && b % 1024 == 0 {
            write!(f, "{} KiB", b / 1024)
        } else {
            write!(f, "{b} bytes")
        }
    }
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Open without blocking on a FIFO that replaced the file after it was checked.
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(all(
        target_os = "linux",
        any(
            target_arch = "x86_64",
            target_arch = "x86",
            target_arch = "aarch64",
            target_arch = "arm",
            target_arch = "riscv64"
        )
    ))]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK on these targets; it changes nothing for a regular file.
        options.custom_flags(0o4000);
    }
    options.open(path)
}

/// Read at most `limit` bytes of the regular file at `path`; a directory, FIFO, device or socket
/// is refused before it is opened, and a file over `limit` is refused after reading at most
/// `limit + 1` bytes.
///
/// ```
/// use citadel_itest_core::config::{InputFileError, read_input_file};
/// let err = read_input_file(std::path::Path::new("/dev/zero"), 1024).unwrap_err();
/// assert!(matches!(err, InputFileError::NotRegular(_)));
/// assert_eq!(err.to_string(), "it is a character device, not a regular file");
/// ```
pub fn read_input_file(path: &Path, limit: u64) -> Result<Vec<u8>, InputFileError> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(InputFileError::NotRegular(kind_of(meta.file_type())));
    }
    if meta.len() > limit {
        return Err(InputFileError::TooLarge {
            limit,
            size: Some(meta.len()),
        });
    }
    let file = open(path)?;
    // The path may have changed between the two looks: check what was opened.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(InputFileError::NotRegular(kind_of(meta.file_type())));
    }
    let mut buf = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(InputFileError::TooLarge { limit, size: None });
    }
    Ok(buf)
}

/// [`read_input_file`] as UTF-8 text.
pub fn read_input_text(path: &Path, limit: u64) -> Result<String, InputFileError> {
    let bytes = read_input_file(path, limit)?;
    String::from_utf8(bytes).map_err(|e| InputFileError::NotUtf8(e.utf8_error().valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_their_unit() {
        assert_eq!(Bytes(1024 * 1024).to_string(), "1 MiB");
        assert_eq!(Bytes(64 * 1024).to_string(), "64 KiB");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
    }

    #[test]
    fn directories_and_caps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_input_file(dir.path(), 10).unwrap_err();
        assert_eq!(err.to_string(), "it is a directory, not a regular file");
        let f = dir.path().join("f");
        std::fs::write(&f, "0123456789abc").unwrap();
        assert_eq!(
            read_input_file(&f, 10).unwrap_err().to_string(),
            "it is larger than the 10 bytes limit (13 bytes)"
        );
        assert_eq!(read_input_file(&f, 13).unwrap().len(), 13);
        std::fs::write(&f, [b'a', 0xff]).unwrap();
        assert!(matches!(
            read_input_text(&f, 10),
            Err(InputFileError::NotUtf8(1))
        ));
    }
}
