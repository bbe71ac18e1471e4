//! Reading the files an operator hands the host — rule-set folders, cases,
//! accounts, input streams — with every size bounded before it is read:
//! only regular files (a FIFO, a device or a socket is refused without
//! being opened for a blocking read), symlinks only when they stay inside
//! the folder they belong to, and never more than the named limit.

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Bytes of a `manifest.toml` (1 MiB).
pub const MANIFEST_BYTES_MAX: u64 = 1 << 20;
/// Bytes of one rule module (64 MiB).
pub const MODULE_BYTES_MAX: u64 = 64 << 20;
/// Bytes of one list file (256 MiB).
pub const LIST_BYTES_MAX: u64 = 256 << 20;
/// Bytes of one cases or scenario file (16 MiB).
pub const CASES_BYTES_MAX: u64 = 16 << 20;
/// Bytes of an accounts file (1 GiB).
pub const ACCOUNTS_BYTES_MAX: u64 = 1 << 30;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The OS refused (not found, permission, …).
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Not a regular file.
    #[error("{}: is a {kind}, not a regular file; only regular files are read", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A symlink that resolves outside the folder it sits in.
    #[error("{}: is a symlink to {} outside {}; links must stay inside the folder", path.display(), target.display(), root.display())]
    Escapes {
        /// The path.
        path: PathBuf,
        /// Where it leads.
        target: PathBuf,
        /// The folder.
        root: PathBuf,
    },
    /// Larger than its limit.
    #[error("{}: larger than the limit of {limit} bytes for {what}", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
        /// What kind of file (`a module`, `a list`, …).
        what: &'static str,
    },
}

impl FileError {
    /// The reason without the path, for callers that name the file themselves.
    pub fn reason(&self) -> String {
        match self {
            FileError::Io { source, .. } => source.to_string(),
            FileError::NotRegular { kind, .. } => {
                format!("is a {kind}, not a regular file; only regular files are read")
            }
            FileError::Escapes { target, root, .. } => {
                format!(
                    "is a symlink to {} outside {}; links must stay inside the folder",
                    target.display(),
                    root.display()
                )
            }
            FileError::TooLarge { limit, what, .. } => format!("larger than the limit of {limit} bytes for {what}"),
        }
    }
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Opens `path` for reading if it is a regular file, without blocking on a
/// FIFO; when `root` is given, a symlink (at any level below `root`) must
/// resolve inside it.
pub fn open_regular(path: &Path, root: Option<&Path>) -> Result<File, FileError> {
    let io = |source| FileError::Io { path: path.to_owned(), source };
    if let Some(root) = root {
        let real_root = root.canonicalize().map_err(|source| FileError::Io { path: root.to_owned(), source })?;
        let target = path.canonicalize().map_err(io)?;
        if !target.starts_with(&real_root) {
            return Err(FileError::Escapes { path: path.to_owned(), target, root: root.to_owned() });
        }
    }
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular { path: path.to_owned(), kind: kind_of(meta.file_type()) });
    }
    Ok(file)
}

/// Reads a whole regular file of at most `limit` bytes (see [`open_regular`]).
pub fn read_bounded(path: &Path, root: Option<&Path>, limit: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let file = open_regular(path, root)?;
    let io = |source| FileError::Io { path: path.to_owned(), source };
    let len = file.metadata().map_err(io)?.len();
    if len > limit {
        return Err(FileError::TooLarge { path: path.to_owned(), limit, what });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow while it is read: never take more than the limit.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge { path: path.to_owned(), limit, what });
    }
    Ok(bytes)
}

/// As [`read_bounded`], as UTF-8 text.
pub fn read_text_bounded(
    path: &Path,
    root: Option<&Path>,
    limit: u64,
    what: &'static str,
) -> Result<String, FileError> {
    let bytes = read_bounded(path, root, limit, what)?;
    String::from_utf8(bytes).map_err(|e| FileError::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text: {}", e.utf8_error())),
    })
}

/// One line of a stream, read with a bounded buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The end of the stream.
    End,
    /// A line (in the buffer, without its `\n`).
    Whole,
    /// A line longer than the limit: its first `limit` bytes are in the
    /// buffer, the rest was skipped up to the next `\n`; `bytes` is its
    /// whole length (without the `\n`).
    TooLong {
        /// The line's length in bytes.
        bytes: u64,
    },
}

/// Reads the next line of `input` into `buf` (cleared first), keeping at
/// most `limit` bytes: a longer line is skipped to its end without being
/// held in memory.
pub fn read_line_bounded(input: &mut impl BufRead, buf: &mut Vec<u8>, limit: usize) -> io::Result<Line> {
    buf.clear();
    let mut total: u64 = 0;
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (taken, done) = match memchr(chunk) {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(chunk.get(..taken.min(room)).unwrap_or_default());
        total = total.saturating_add(taken as u64);
        input.consume(if done { taken.saturating_add(1) } else { taken });
        if done {
            break;
        }
    }
    Ok(if !any {
        Line::End
    } else if total > limit as u64 {
        Line::TooLong { bytes: total }
    } else {
        Line::Whole
    })
}

fn memchr(chunk: &[u8]) -> Option<usize> {
    chunk.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], limit: usize) -> Vec<(Line, Vec<u8>)> {
        // A tiny buffer so lines span many `fill_buf` chunks.
        let mut input = io::BufReader::with_capacity(3, text);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let line = read_line_bounded(&mut input, &mut buf, limit).unwrap();
            if line == Line::End {
                return out;
            }
            out.push((line, buf.clone()));
        }
    }

    #[test]
    fn long_lines_are_cut_and_skipped_to_their_end() {
        let got = lines(b"ab\nabcdefghij\n\nxyz", 4);
        assert_eq!(
            got,
            vec![
                (Line::Whole, b"ab".to_vec()),
                (Line::TooLong { bytes: 10 }, b"abcd".to_vec()),
                (Line::Whole, b"".to_vec()),
                (Line::Whole, b"xyz".to_vec()),
            ]
        );
        assert_eq!(lines(b"abcd\n", 4), vec![(Line::Whole, b"abcd".to_vec())]);
        assert!(lines(b"", 4).is_empty());
    }

    #[test]
    fn special_files_and_escaping_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("ok.txt"), "a\n").unwrap();
        assert_eq!(read_bounded(&root.join("ok.txt"), Some(root), 10, "a list").unwrap(), b"a\n");
        assert!(matches!(read_bounded(&root.join("ok.txt"), Some(root), 1, "a list"), Err(FileError::TooLarge { .. })));
        std::os::unix::fs::symlink(root.join("ok.txt"), root.join("inside.txt")).unwrap();
        assert!(read_bounded(&root.join("inside.txt"), Some(root), 10, "a list").is_ok());
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.txt")).unwrap();
        assert!(matches!(
            read_bounded(&root.join("zero.txt"), Some(root), 10, "a list"),
            Err(FileError::Escapes { .. })
        ));
        assert!(matches!(
            read_bounded(Path::new("/dev/zero"), None, 10, "a list"),
            Err(FileError::NotRegular { kind: "character device", .. })
        ));
        let fifo = root.join("fifo.txt");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_bounded(&fifo, Some(root), 10, "a list"),
            Err(FileError::NotRegular { kind: "FIFO", .. })
        ));
        assert!(matches!(read_bounded(root, None, 10, "a list"), Err(FileError::NotRegular { kind: "directory", .. })));
    }
}
