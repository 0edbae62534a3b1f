//! Confining requested names to a served directory: [`Root`] turns a name a
//! peer sent into an open file inside the root, or a [`Refusal`].
//!
//! Always true, for any bytes a peer sends:
//! - nothing outside the root is ever opened for reading and returned:
//!   names that are not UTF-8, contain NUL, are absolute, or have a `..`
//!   component are refused before the file system is touched;
//! - symlinks are followed, but the file finally opened must lie inside the
//!   root. The check is made on the *opened* descriptor (its path read back
//!   from `/proc/self/fd`), so swapping a path component for a symlink
//!   between the check and the open does not help an attacker;
//! - opening never blocks the loop: files are opened with `O_NONBLOCK`, so a
//!   FIFO placed in the root is refused instead of waiting for a writer.
//!
//! The plain file protocol and the HTTP handler share this code, so both
//! follow the same rules.

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// A directory whose contents may be served.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

/// What a resolved name turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// A name resolved inside the root, opened.
#[derive(Debug)]
pub struct Resolved {
    /// The open file or directory.
    pub file: File,
    /// Its metadata, from the open descriptor.
    pub metadata: Metadata,
    /// Its real path (inside the root).
    pub path: PathBuf,
    /// File or directory.
    pub kind: Kind,
}

/// Why a name is not served.
#[derive(Debug)]
pub enum Refusal {
    /// The name is not UTF-8.
    NotUtf8,
    /// The name contains a NUL byte.
    Nul,
    /// The name is absolute (`/etc/passwd`).
    Absolute,
    /// The name has a `..` component.
    Parent,
    /// Nothing by that name (or it cannot be opened).
    NotFound(io::Error),
    /// The name resolves to something outside the root (a symlink).
    OutsideRoot,
    /// Neither a regular file nor a directory (a FIFO, a device, a socket).
    NotServable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotUtf8 => f.write_str("name is not UTF-8"),
            Refusal::Nul => f.write_str("name contains NUL"),
            Refusal::Absolute => f.write_str("absolute name"),
            Refusal::Parent => f.write_str("name leaves the root with .."),
            Refusal::NotFound(err) => write!(f, "not found: {err}"),
            Refusal::OutsideRoot => f.write_str("resolves outside the root"),
            Refusal::NotServable => f.write_str("not a regular file or directory"),
        }
    }
}

impl Root {
    /// The root at `dir`, resolved once to its real path.
    ///
    /// # Errors
    ///
    /// `dir` does not exist or is not a directory.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Root> {
        let dir = std::fs::canonicalize(dir.as_ref())?;
        if !dir.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a directory"));
        }
        Ok(Root { dir })
    }

    /// The root's real path.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves a name relative to the root and opens it. The empty name
    /// (or `.`) is the root itself.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] saying why the name is not served.
    pub fn resolve(&self, name: &[u8]) -> Result<Resolved, Refusal> {
        let relative = check_name(name)?;
        let joined = self.dir.join(relative);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&joined)
            .map_err(Refusal::NotFound)?;
        let path = opened_path(&file, &joined).map_err(Refusal::NotFound)?;
        if !path.starts_with(&self.dir) {
            return Err(Refusal::OutsideRoot);
        }
        let metadata = file.metadata().map_err(Refusal::NotFound)?;
        let kind = if metadata.is_file() {
            Kind::File
        } else if metadata.is_dir() {
            Kind::Dir
        } else {
            return Err(Refusal::NotServable);
        };
        Ok(Resolved {
            file,
            metadata,
            path,
            kind,
        })
    }
}

/// Checks a name's form without touching the file system, and returns it
/// as a relative path.
fn check_name(name: &[u8]) -> Result<&Path, Refusal> {
    let name = std::str::from_utf8(name).map_err(|_| Refusal::NotUtf8)?;
    if name.contains('\0') {
        return Err(Refusal::Nul);
    }
    let path = Path::new(name);
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::Parent),
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::Absolute),
        }
    }
    Ok(path)
}

/// The real path of an open descriptor: read back from `/proc/self/fd` on
/// Linux, where that is the file actually opened; elsewhere the
/// canonicalized name.
fn opened_path(file: &File, opened_as: &Path) -> io::Result<PathBuf> {
    match std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(path) => Ok(path),
        Err(_) => std::fs::canonicalize(opened_as),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new(tag: &str) -> TempRoot {
            let dir = std::env::temp_dir().join(format!("evloop-path-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("sub")).expect("temp root");
            std::fs::write(dir.join("a.txt"), b"a").expect("file");
            std::fs::write(dir.join("sub/b.txt"), b"b").expect("file");
            TempRoot(dir)
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn refusal(root: &Root, name: &[u8]) -> Refusal {
        root.resolve(name).expect_err("refused")
    }

    #[test]
    fn files_and_directories_inside_resolve() {
        let temp = TempRoot::new("inside");
        let root = Root::new(&temp.0).expect("root");
        assert_eq!(root.resolve(b"a.txt").expect("file").kind, Kind::File);
        assert_eq!(root.resolve(b"sub/b.txt").expect("file").metadata.len(), 1);
        assert_eq!(root.resolve(b"./sub/./b.txt").expect("file").kind, Kind::File);
        assert_eq!(root.resolve(b"sub").expect("dir").kind, Kind::Dir);
        assert_eq!(root.resolve(b"").expect("root").kind, Kind::Dir);
    }

    #[test]
    fn malformed_names_are_refused_before_the_file_system() {
        let temp = TempRoot::new("malformed");
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b"\xff\xfe"), Refusal::NotUtf8));
        assert!(matches!(refusal(&root, b"a.txt\0"), Refusal::Nul));
        assert!(matches!(refusal(&root, b"/etc/passwd"), Refusal::Absolute));
        assert!(matches!(refusal(&root, b"../a.txt"), Refusal::Parent));
        assert!(matches!(refusal(&root, b"sub/../../a.txt"), Refusal::Parent));
        assert!(matches!(refusal(&root, b"sub/.."), Refusal::Parent));
        assert!(matches!(refusal(&root, b"missing"), Refusal::NotFound(_)));
    }

    #[test]
    fn symlink_out_of_the_root_is_refused_and_one_inside_is_followed() {
        let temp = TempRoot::new("symlink");
        let outside = TempRoot::new("symlink-outside");
        std::os::unix::fs::symlink(outside.0.join("a.txt"), temp.0.join("escape")).expect("symlink");
        std::os::unix::fs::symlink(&outside.0, temp.0.join("escape-dir")).expect("symlink");
        std::os::unix::fs::symlink(temp.0.join("sub/b.txt"), temp.0.join("inside")).expect("symlink");
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b"escape"), Refusal::OutsideRoot));
        assert!(matches!(
            refusal(&root, b"escape-dir/a.txt"),
            Refusal::OutsideRoot
        ));
        assert_eq!(root.resolve(b"inside").expect("followed").metadata.len(), 1);
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let temp = TempRoot::new("fifo");
        let fifo = temp.0.join("pipe");
        let c_path = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("no NUL");
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b"pipe"), Refusal::NotServable));
    }

    #[test]
    fn root_must_be_a_directory() {
        let temp = TempRoot::new("rootfile");
        assert!(Root::new(temp.0.join("a.txt")).is_err());
        assert!(Root::new(temp.0.join("missing")).is_err());
    }
}
