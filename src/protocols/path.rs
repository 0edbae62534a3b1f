//! Confining requested names to a served directory: [`Root`] turns a name a
//! peer sent into an open file inside the root, or a [`Refusal`] saying why
//! not. [`Root::resolve_file`] serves regular files only (the plain file
//! protocol); [`Root::resolve`] also opens directories (HTTP listings).
//!
//! Always true, for any bytes a peer sends:
//! - names that are empty, not UTF-8, contain NUL, are absolute, or have a
//!   `..` component are refused before the file system is touched;
//! - nothing outside the root is returned: symlinks are followed, but the
//!   file finally opened must lie inside the root (a symlink from inside to
//!   inside is fine, one resolving outside is refused);
//! - the checks are made by the kernel while it opens the name, or on the
//!   *open descriptor*, never on the name alone: on Linux the name is
//!   opened with `openat2(RESOLVE_BENEATH)` relative to the root (opened
//!   by its path for each name, so that a root removed or replaced is seen
//!   at once), so the kernel refuses to resolve any component outside the
//!   root (in the one system call that opens the file). A name it refuses
//!   that way (it crosses an absolute symlink, or one leading out) is
//!   opened again and judged by its real path, read back from
//!   `/proc/self/fd`: an absolute symlink to a file inside the root is
//!   followed, one leading out refused. The type and size come from
//!   `fstat`. So swapping a path component for a symlink, or a file for a
//!   directory, between a check and the open does not help an attacker (on
//!   systems without `openat2` or `/proc` the path check falls back to
//!   `canonicalize`, which is open to that race);
//! - opening never blocks the loop: files are opened with `O_NONBLOCK` (and
//!   `O_NOCTTY`), so a FIFO placed in the root is refused instead of waiting
//!   for a writer.
//!
//! - a name is said to be missing or forbidden ([`Refusal::NotFound`])
//!   only when the open failed because of the name itself: it does not
//!   exist, a component is not a directory, a symlink loops, the name is too
//!   long, or permission is denied. Any other failure (out of descriptors,
//!   out of memory, an IO error) is [`Refusal::Unavailable`], which says
//!   nothing about the name: callers must not report such a file as missing,
//!   or a client (a mirror script) would take an existing file for deleted.
//!   [`Refusal::is_temporary`] tells the two apart.
//!
//! The plain file protocol and the HTTP handler share this code, so both
//! follow the same rules.

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// A directory whose contents may be served, resolved once (at startup) to
/// its real path.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

/// Flags every name is opened with: never blocking the loop (a FIFO is
/// refused instead of waiting for a writer), never taking a terminal.
const OPEN_FLAGS: libc::c_int = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

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
    /// Its metadata, from the open descriptor (`fstat`), not from the name.
    pub metadata: Metadata,
    /// Where it is: for a directory, its real path (read back from the
    /// descriptor, inside the root); for a file, the root joined with the
    /// name asked for, which may pass through symlinks inside the root
    /// (it names the file in logs).
    pub path: PathBuf,
    /// File or directory.
    pub kind: Kind,
}

/// Why a name is not served.
#[derive(Debug)]
pub enum Refusal {
    /// The name is empty (the root itself is `.`).
    Empty,
    /// The name is not UTF-8.
    NotUtf8,
    /// The name contains a NUL byte.
    Nul,
    /// The name is absolute (`/etc/passwd`).
    Absolute,
    /// The name has a `..` component.
    Parent,
    /// It could not be opened because of the name: missing
    /// ([`io::ErrorKind::NotFound`]), a component that is not a directory, a
    /// dangling or looping symlink, a name too long, or no permission
    /// ([`io::ErrorKind::PermissionDenied`]). See [`Refusal::from_open_error`].
    NotFound(io::Error),
    /// It could not be opened (or examined once open) for a reason that says
    /// nothing about the name: out of descriptors (`EMFILE`, `ENFILE`), out
    /// of memory, an IO error. The file may well exist; the request may
    /// succeed later. See [`Refusal::from_open_error`].
    Unavailable(io::Error),
    /// The name resolves to something outside the root (through a symlink).
    OutsideRoot,
    /// A directory, where only regular files are served
    /// ([`Root::resolve_file`]).
    IsDirectory,
    /// Neither a regular file nor a directory (a FIFO, a device, a socket).
    NotServable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Empty => f.write_str("empty name"),
            Refusal::NotUtf8 => f.write_str("name is not UTF-8"),
            Refusal::Nul => f.write_str("name contains NUL"),
            Refusal::Absolute => f.write_str("absolute name"),
            Refusal::Parent => f.write_str("name leaves the root with .."),
            Refusal::NotFound(err) => write!(f, "cannot open: {err}"),
            Refusal::Unavailable(err) => write!(f, "cannot open now: {err}"),
            Refusal::OutsideRoot => f.write_str("resolves outside the root"),
            Refusal::IsDirectory => f.write_str("a directory"),
            Refusal::NotServable => f.write_str("not a regular file or directory"),
        }
    }
}

impl Refusal {
    /// Classifies an error from opening a name (or from examining the
    /// descriptor just opened): [`Refusal::NotFound`] when the error is
    /// about the name, [`Refusal::Unavailable`] otherwise.
    ///
    /// About the name: `ENOENT`, `ENOTDIR`, `ELOOP`, `ENAMETOOLONG`,
    /// `EACCES`, `EPERM`, and `ENXIO`/`ENODEV` (a device or socket with
    /// nothing behind it). Everything else, `EMFILE`, `ENFILE`, `ENOMEM`,
    /// `EIO`, `EINTR`, `EAGAIN` and errors not listed, is
    /// [`Refusal::Unavailable`]: when in doubt, a file is not called missing.
    /// An error without an OS code is classified by its kind
    /// ([`io::ErrorKind::NotFound`] and [`io::ErrorKind::PermissionDenied`]
    /// are about the name).
    pub fn from_open_error(err: io::Error) -> Refusal {
        let about_the_name = match err.raw_os_error() {
            Some(code) => matches!(
                code,
                libc::ENOENT
                    | libc::ENOTDIR
                    | libc::ELOOP
                    | libc::ENAMETOOLONG
                    | libc::EACCES
                    | libc::EPERM
                    | libc::ENXIO
                    | libc::ENODEV
            ),
            None => matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
        };
        if about_the_name {
            Refusal::NotFound(err)
        } else {
            Refusal::Unavailable(err)
        }
    }

    /// Whether the refusal says nothing about the name, and the same request
    /// may succeed later ([`Refusal::Unavailable`]): a protocol must then
    /// not answer "missing" or "forbidden".
    pub fn is_temporary(&self) -> bool {
        matches!(self, Refusal::Unavailable(_))
    }
}

impl Root {
    /// The root at `dir`, resolved once to its real path, so later checks
    /// compare real paths with real paths.
    ///
    /// # Errors
    ///
    /// `dir` does not exist or is not a directory.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Root> {
        let dir = std::fs::canonicalize(dir.as_ref())?;
        if !std::fs::metadata(&dir)?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a directory"));
        }
        Ok(Root { dir })
    }

    /// The root's real path.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves a name relative to the root and opens it, if it is a
    /// regular file: what the plain file protocol serves.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] saying why the name is not served; a directory is
    /// [`Refusal::IsDirectory`]; [`Refusal::Unavailable`] when it could not
    /// be opened for a reason other than the name.
    pub fn resolve_file(&self, name: &[u8]) -> Result<Resolved, Refusal> {
        let resolved = self.resolve(name)?;
        match resolved.kind {
            Kind::File => Ok(resolved),
            Kind::Dir => Err(Refusal::IsDirectory),
        }
    }

    /// Resolves a name relative to the root and opens it, if it is a
    /// regular file or a directory (for listings). The root itself is `.`.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] saying why the name is not served;
    /// [`Refusal::Unavailable`] when it could not be opened for a reason
    /// other than the name (out of descriptors, an IO error).
    pub fn resolve(&self, name: &[u8]) -> Result<Resolved, Refusal> {
        let relative = check_name(name)?;
        let joined = self.dir.join(relative);
        let (file, real) = match self.open_beneath(relative) {
            Beneath::Opened(file) => (file, None),
            Beneath::Failed(err) => return Err(Refusal::from_open_error(err)),
            Beneath::Check => {
                let file = OpenOptions::new()
                    .read(true)
                    .custom_flags(OPEN_FLAGS)
                    .open(&joined)
                    .map_err(Refusal::from_open_error)?;
                let path = opened_path(&file, &joined).map_err(Refusal::from_open_error)?;
                // `Path::starts_with` compares whole components:
                // `/srv/www-old` is not inside `/srv/www`.
                if !path.starts_with(&self.dir) {
                    return Err(Refusal::OutsideRoot);
                }
                (file, Some(path))
            }
        };
        let metadata = file.metadata().map_err(Refusal::from_open_error)?;
        let (kind, path) = if metadata.is_file() {
            (Kind::File, joined)
        } else if metadata.is_dir() {
            let path = match real {
                Some(path) => path,
                None => opened_path(&file, &joined).map_err(Refusal::from_open_error)?,
            };
            (Kind::Dir, path)
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

    /// Opens `relative` with the kernel keeping every step of its
    /// resolution beneath the root.
    #[cfg(target_os = "linux")]
    fn open_beneath(&self, relative: &Path) -> Beneath {
        use std::os::fd::AsFd;
        use std::sync::atomic::{AtomicBool, Ordering};

        /// Cleared when the kernel (or a sandbox) has no `openat2`.
        static SUPPORTED: AtomicBool = AtomicBool::new(true);

        if !SUPPORTED.load(Ordering::Relaxed) {
            return Beneath::Check;
        }
        // The root is opened by its path for each name, not held open: a
        // root removed, or replaced by another directory of the same name,
        // is seen at once (a missing root then fails in the path check,
        // as a missing name).
        let Some(dir) = open_dir_path(&self.dir) else {
            return Beneath::Check;
        };
        let err = match crate::sys::open_beneath(dir.as_fd(), relative, OPEN_FLAGS) {
            Ok(file) => return Beneath::Opened(file),
            Err(err) => err,
        };
        match err.raw_os_error() {
            // The name left the root, or crossed an absolute symlink (which
            // may point back inside): judged by its real path.
            Some(libc::EXDEV) => Beneath::Check,
            // A rename or mount raced the resolution; a sandbox refused the
            // call (seccomp answers EPERM): the path check decides.
            Some(libc::EAGAIN | libc::EPERM) => Beneath::Check,
            // No `openat2`, or not these flags.
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG) => {
                SUPPORTED.store(false, Ordering::Relaxed);
                Beneath::Check
            }
            _ => Beneath::Failed(err),
        }
    }

    /// Elsewhere every name takes the path check.
    #[cfg(not(target_os = "linux"))]
    fn open_beneath(&self, _relative: &Path) -> Beneath {
        Beneath::Check
    }
}

/// What opening a name beneath the root came to.
enum Beneath {
    /// Opened, and inside the root: the kernel checked every step.
    Opened(File),
    /// Failed for a reason about the name or the system, as a plain open.
    Failed(io::Error),
    /// Not decided here: open the name and check its real path.
    Check,
}

/// The root directory opened `O_PATH`, to open a name beneath; `None`
/// where that is not possible (the path check is used then).
#[cfg(target_os = "linux")]
fn open_dir_path(dir: &Path) -> Option<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .ok()
        .map(OwnedFd::from)
}

/// Checks a name's form without touching the file system, and returns it
/// as a relative path.
fn check_name(name: &[u8]) -> Result<&Path, Refusal> {
    if name.is_empty() {
        return Err(Refusal::Empty);
    }
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
/// Linux, where it names the file actually opened; elsewhere the
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

    /// A temporary directory with `a.txt` and `sub/b.txt`, removed on drop.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new(tag: &str) -> TempRoot {
            let dir = std::env::temp_dir().join(format!("evloop-path-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("sub")).expect("temp root");
            std::fs::write(dir.join("a.txt"), b"a").expect("file");
            std::fs::write(dir.join("sub/b.txt"), b"bb").expect("file");
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
    fn regular_files_inside_resolve_with_metadata_from_the_descriptor() {
        let temp = TempRoot::new("inside");
        let root = Root::new(&temp.0).expect("root");
        let a = root.resolve_file(b"a.txt").expect("file");
        assert_eq!((a.kind, a.metadata.len()), (Kind::File, 1));
        assert_eq!(a.path, root.dir().join("a.txt"));
        assert_eq!(root.resolve_file(b"sub/b.txt").expect("file").metadata.len(), 2);
        assert_eq!(
            root.resolve_file(b"./sub/./b.txt").expect("file").metadata.len(),
            2
        );
    }

    #[test]
    fn directories_resolve_only_where_allowed() {
        let temp = TempRoot::new("dirs");
        let root = Root::new(&temp.0).expect("root");
        assert_eq!(root.resolve(b"sub").expect("dir").kind, Kind::Dir);
        assert_eq!(root.resolve(b"sub/").expect("dir").kind, Kind::Dir);
        assert_eq!(root.resolve(b".").expect("the root").path, root.dir());
        assert!(matches!(root.resolve_file(b"sub"), Err(Refusal::IsDirectory)));
        assert!(matches!(root.resolve_file(b"."), Err(Refusal::IsDirectory)));
    }

    #[test]
    fn empty_name_is_refused() {
        let temp = TempRoot::new("empty");
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b""), Refusal::Empty));
        assert!(matches!(root.resolve_file(b""), Err(Refusal::Empty)));
    }

    #[test]
    fn non_utf8_name_is_refused() {
        let temp = TempRoot::new("utf8");
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b"\xff\xfe"), Refusal::NotUtf8));
        assert!(matches!(refusal(&root, b"a\xc3"), Refusal::NotUtf8));
    }

    #[test]
    fn nul_anywhere_in_the_name_is_refused() {
        let temp = TempRoot::new("nul");
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b"a.txt\0"), Refusal::Nul));
        assert!(matches!(refusal(&root, b"\0a.txt"), Refusal::Nul));
        assert!(matches!(refusal(&root, b"sub\0/b.txt"), Refusal::Nul));
    }

    #[test]
    fn absolute_name_is_refused() {
        let temp = TempRoot::new("absolute");
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b"/etc/passwd"), Refusal::Absolute));
        let inside = root.dir().join("a.txt");
        let inside = inside.to_str().expect("utf-8").as_bytes();
        assert!(
            matches!(refusal(&root, inside), Refusal::Absolute),
            "even when it names a file inside the root"
        );
    }

    #[test]
    fn parent_component_is_refused_wherever_it_is() {
        let temp = TempRoot::new("parent");
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b".."), Refusal::Parent));
        assert!(matches!(refusal(&root, b"../a.txt"), Refusal::Parent));
        assert!(matches!(refusal(&root, b"sub/../a.txt"), Refusal::Parent));
        assert!(matches!(refusal(&root, b"sub/../../a.txt"), Refusal::Parent));
        assert!(matches!(refusal(&root, b"sub/.."), Refusal::Parent));
        // Dots that are not a whole component are ordinary names.
        assert!(matches!(refusal(&root, b"..a"), Refusal::NotFound(_)));
    }

    #[test]
    fn missing_name_is_not_found() {
        let temp = TempRoot::new("missing");
        let root = Root::new(&temp.0).expect("root");
        match refusal(&root, b"missing") {
            Refusal::NotFound(err) => assert_eq!(err.kind(), io::ErrorKind::NotFound),
            other => panic!("{other}"),
        }
        assert!(matches!(refusal(&root, b"a.txt/x"), Refusal::NotFound(_)));
    }

    #[test]
    fn open_errors_about_the_name_are_refusals_and_others_unavailable() {
        let about_the_name = [
            libc::ENOENT,
            libc::ENOTDIR,
            libc::ELOOP,
            libc::ENAMETOOLONG,
            libc::EACCES,
            libc::EPERM,
            libc::ENXIO,
            libc::ENODEV,
        ];
        for code in about_the_name {
            let refusal = Refusal::from_open_error(io::Error::from_raw_os_error(code));
            assert!(matches!(refusal, Refusal::NotFound(_)), "errno {code}: {refusal}");
            assert!(!refusal.is_temporary());
        }
        let not_about_the_name = [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::EIO,
            libc::EINTR,
            libc::EAGAIN,
            libc::EOVERFLOW,
            libc::ESTALE,
        ];
        for code in not_about_the_name {
            let refusal = Refusal::from_open_error(io::Error::from_raw_os_error(code));
            assert!(
                matches!(refusal, Refusal::Unavailable(_)),
                "errno {code}: {refusal}"
            );
            assert!(refusal.is_temporary());
        }
        // Errors without an OS code, by their kind.
        let missing = Refusal::from_open_error(io::ErrorKind::NotFound.into());
        assert!(matches!(missing, Refusal::NotFound(_)));
        let denied = Refusal::from_open_error(io::ErrorKind::PermissionDenied.into());
        assert!(matches!(denied, Refusal::NotFound(_)));
        let other = Refusal::from_open_error(io::ErrorKind::OutOfMemory.into());
        assert!(matches!(other, Refusal::Unavailable(_)));
    }

    #[test]
    fn symlink_out_of_the_root_is_refused_and_one_inside_is_followed() {
        let temp = TempRoot::new("symlink");
        let outside = TempRoot::new("symlink-outside");
        std::os::unix::fs::symlink(outside.0.join("a.txt"), temp.0.join("escape")).expect("symlink");
        std::os::unix::fs::symlink(&outside.0, temp.0.join("escape-dir")).expect("symlink");
        std::os::unix::fs::symlink("/", temp.0.join("slash")).expect("symlink");
        std::os::unix::fs::symlink(temp.0.join("sub/b.txt"), temp.0.join("inside")).expect("symlink");
        std::os::unix::fs::symlink("sub/b.txt", temp.0.join("relative")).expect("symlink");
        std::os::unix::fs::symlink("sub", temp.0.join("subdir")).expect("symlink");
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b"escape"), Refusal::OutsideRoot));
        assert!(matches!(
            refusal(&root, b"escape-dir/a.txt"),
            Refusal::OutsideRoot
        ));
        assert!(matches!(refusal(&root, b"escape-dir"), Refusal::OutsideRoot));
        assert!(matches!(
            refusal(&root, b"slash/etc/passwd"),
            Refusal::OutsideRoot
        ));
        for name in [&b"inside"[..], b"relative", b"subdir/b.txt"] {
            let resolved = root.resolve_file(name).expect("followed");
            assert_eq!(resolved.metadata.len(), 2, "sub/b.txt");
            let asked = std::str::from_utf8(name).expect("ASCII");
            assert_eq!(resolved.path, root.dir().join(asked));
        }
        // A directory is named by its real path (listings are keyed by it).
        assert_eq!(
            root.resolve(b"subdir").expect("followed").path,
            root.dir().join("sub")
        );
    }

    #[test]
    fn sibling_directory_sharing_the_prefix_is_outside() {
        let temp = TempRoot::new("prefix");
        let sibling = PathBuf::from(format!("{}-old", temp.0.display()));
        std::fs::create_dir_all(&sibling).expect("sibling");
        std::fs::write(sibling.join("secret"), b"s").expect("file");
        std::os::unix::fs::symlink(sibling.join("secret"), temp.0.join("secret")).expect("symlink");
        let root = Root::new(&temp.0).expect("root");
        let refused = refusal(&root, b"secret");
        let _ = std::fs::remove_dir_all(&sibling);
        assert!(matches!(refused, Refusal::OutsideRoot));
    }

    #[test]
    fn root_named_through_a_symlink_still_confines() {
        let temp = TempRoot::new("rootlink");
        let link = PathBuf::from(format!("{}-link", temp.0.display()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&temp.0, &link).expect("symlink");
        let root = Root::new(&link);
        let _ = std::fs::remove_file(&link);
        let root = root.expect("root");
        assert_eq!(root.dir(), std::fs::canonicalize(&temp.0).expect("real"));
        assert_eq!(root.resolve_file(b"a.txt").expect("file").metadata.len(), 1);
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let temp = TempRoot::new("fifo");
        let fifo = temp.0.join("pipe");
        crate::sys::mkfifo(&fifo).expect("mkfifo");
        let root = Root::new(&temp.0).expect("root");
        assert!(matches!(refusal(&root, b"pipe"), Refusal::NotServable));
    }

    #[test]
    fn root_must_be_an_existing_directory() {
        let temp = TempRoot::new("rootfile");
        assert!(Root::new(temp.0.join("a.txt")).is_err());
        assert!(Root::new(temp.0.join("missing")).is_err());
    }
}
