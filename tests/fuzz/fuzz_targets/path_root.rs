//! Path confinement (`evloop::protocols::path::Root`) against its module
//! docs, on a small real directory tree.
//!
//! Once per process a temporary tree is built (removed at exit):
//!
//! ```text
//! base/
//!   secret.txt, outside/secret.txt, outside/inner/secret.txt,
//!   root-old/secret.txt          every one holds SECRET
//!   root/                        the served root
//!     a.txt, index.html, sub/b.txt, sub/deeper/c.txt, fifo (a FIFO)
//!     inside -> sub/b.txt, subdir -> sub, self -> ., abs-inside -> root/a.txt
//!     escape -> ../outside/secret.txt, escape-abs -> base/outside/secret.txt,
//!     escape-dir -> ../outside, parent -> .., prefix -> ../root-old/secret.txt,
//!     sub/up -> base/outside, sub/escape-up -> ../../secret.txt,
//!     dangling -> missing, loop -> loop
//! ```
//!
//! Checked for any input bytes as a name:
//! - empty, non-UTF-8, NUL, absolute and `..` names get exactly the refusal
//!   the docs name, in that order; other names never get one of those;
//! - a name that resolves is inside the root: its real path starts with
//!   `root.dir()`, the open descriptor is one of the files and directories
//!   of the tree found at startup (compared by device and inode, which does
//!   not rely on the `/proc/self/fd` read-back that `resolve` itself uses),
//!   it is never a secret file, and a file read through it holds no SECRET;
//! - `kind` and `metadata` describe the open descriptor, and the path names
//!   it: for a directory, the name's canonical path; for a file, the root
//!   joined with the name;
//! - `resolve_file` is `resolve` with directories refused;
//! - nothing blocks (the FIFO) and nothing panics.
#![no_main]

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Read;
use std::mem::discriminant;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use evloop::protocols::path::{Kind, Refusal, Root};
use libfuzzer_sys::fuzz_target;

/// What every file outside the root holds, and no file inside.
const SECRET: &[u8] = b"EVLOOP-FUZZ-SECRET-5f0c1e";

struct Fixture {
    base: PathBuf,
    root: Root,
    /// (device, inode) of every file and directory inside the root.
    inside: HashSet<(u64, u64)>,
    /// (device, inode) of every secret file.
    secrets: HashSet<(u64, u64)>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fixture = FIXTURE.get_or_init(build);
    check(fixture, data);
    // Inputs starting with 0x01 also spell a name from the tree's parts, so
    // that the fuzzer combines real names, links and separators quickly.
    if let [1, rest @ ..] = data {
        let name: Vec<u8> = rest
            .iter()
            .flat_map(|&b| PARTS[usize::from(b) % PARTS.len()].iter().copied())
            .collect();
        check(fixture, &name);
    }
});

/// Pieces of names: the tree's entries, separators, dots and odd bytes.
const PARTS: [&[u8]; 32] = [
    b"/",
    b"/",
    b"/",
    b".",
    b"..",
    b"./",
    b"../",
    b"a.txt",
    b"index.html",
    b"sub",
    b"deeper",
    b"b.txt",
    b"c.txt",
    b"c",
    b"inside",
    b"subdir",
    b"self",
    b"abs-inside",
    b"escape",
    b"escape-abs",
    b"escape-dir",
    b"parent",
    b"prefix",
    b"up",
    b"escape-up",
    b"secret.txt",
    b"outside",
    b"root",
    b"inner",
    b"fifo",
    b"loop",
    b"\0",
];

fn id(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn build() -> Fixture {
    let base = std::env::temp_dir().join(format!("evloop-fuzz-path-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("root");
    let outside = base.join("outside");
    for dir in [
        root.join("sub/deeper"),
        outside.join("inner"),
        base.join("root-old"),
    ] {
        std::fs::create_dir_all(dir).expect("fixture directory");
    }
    let write = |path: PathBuf, contents: &[u8]| std::fs::write(path, contents).expect("fixture file");
    write(root.join("a.txt"), b"alpha\n");
    write(root.join("index.html"), b"<p>index</p>\n");
    write(root.join("sub/b.txt"), b"bravo\n");
    write(root.join("sub/deeper/c.txt"), b"charlie\n");
    let secrets = [
        base.join("secret.txt"),
        outside.join("secret.txt"),
        outside.join("inner/secret.txt"),
        base.join("root-old/secret.txt"),
    ];
    for secret in &secrets {
        write(secret.clone(), SECRET);
    }
    let links: [(&Path, PathBuf); 14] = [
        (Path::new("sub/b.txt"), root.join("inside")),
        (Path::new("sub"), root.join("subdir")),
        (Path::new("."), root.join("self")),
        (&root.join("a.txt"), root.join("abs-inside")),
        (Path::new("../outside/secret.txt"), root.join("escape")),
        (&outside.join("secret.txt"), root.join("escape-abs")),
        (Path::new("../outside"), root.join("escape-dir")),
        (Path::new(".."), root.join("parent")),
        (Path::new("../root-old/secret.txt"), root.join("prefix")),
        (&outside, root.join("sub/up")),
        (Path::new("../../secret.txt"), root.join("sub/escape-up")),
        (Path::new("missing"), root.join("dangling")),
        (Path::new("loop"), root.join("loop")),
        (Path::new("deeper/c.txt"), root.join("sub/c")),
    ];
    for (target, link) in &links {
        symlink(target, link).expect("fixture symlink");
    }
    let fifo = CString::new(root.join("fifo").into_os_string().into_encoded_bytes()).expect("no NUL");
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");

    let mut inside = HashSet::new();
    collect(&root, &mut inside);
    let secrets = secrets
        .iter()
        .map(|s| id(&std::fs::metadata(s).expect("secret")))
        .collect();
    let fixture = Fixture {
        root: Root::new(&root).expect("the root"),
        base,
        inside,
        secrets,
    };
    // SAFETY: registers a plain `extern "C"` function with no arguments.
    unsafe { libc::atexit(remove_fixture) };
    fixture
}

/// Every file and directory under `dir` (itself included), without
/// following symlinks.
fn collect(dir: &Path, out: &mut HashSet<(u64, u64)>) {
    let meta = std::fs::symlink_metadata(dir).expect("walk");
    out.insert(id(&meta));
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).expect("walk") {
            collect(&entry.expect("walk").path(), out);
        }
    }
}

extern "C" fn remove_fixture() {
    if let Some(fixture) = FIXTURE.get() {
        let _ = std::fs::remove_dir_all(&fixture.base);
    }
}

/// The refusal the docs say a name's form alone earns, checked in the
/// docs' order: empty, not UTF-8, NUL, absolute, `..`.
fn form_refusal(name: &[u8]) -> Option<Refusal> {
    if name.is_empty() {
        return Some(Refusal::Empty);
    }
    let Ok(text) = std::str::from_utf8(name) else {
        return Some(Refusal::NotUtf8);
    };
    if text.contains('\0') {
        return Some(Refusal::Nul);
    }
    if text.starts_with('/') {
        return Some(Refusal::Absolute);
    }
    if text.split('/').any(|part| part == "..") {
        return Some(Refusal::Parent);
    }
    None
}

fn is_form_refusal(r: &Refusal) -> bool {
    matches!(
        r,
        Refusal::Empty | Refusal::NotUtf8 | Refusal::Nul | Refusal::Absolute | Refusal::Parent
    )
}

fn check(fixture: &Fixture, name: &[u8]) {
    let root = &fixture.root;
    let resolved = root.resolve(name);
    let as_file = root.resolve_file(name);
    match form_refusal(name) {
        Some(want) => {
            let got = resolved.as_ref().expect_err("a badly formed name resolved");
            assert_eq!(
                discriminant(got),
                discriminant(&want),
                "{name:?}: {got} instead of {want}"
            );
            let got = as_file.as_ref().expect_err("a badly formed name resolved");
            assert_eq!(
                discriminant(got),
                discriminant(&want),
                "{name:?}: {got} instead of {want}"
            );
            return;
        }
        None => {
            if let Err(refusal) = &resolved {
                assert!(!is_form_refusal(refusal), "{name:?}: refused as {refusal}");
                assert!(
                    matches!(
                        refusal,
                        Refusal::NotFound(_) | Refusal::OutsideRoot | Refusal::NotServable
                    ),
                    "{name:?}: resolve refused with {refusal}"
                );
            }
        }
    }
    match (&resolved, &as_file) {
        (Ok(r), Ok(f)) => {
            assert_eq!((r.kind, f.kind), (Kind::File, Kind::File));
            assert_eq!(r.path, f.path);
        }
        (Ok(r), Err(Refusal::IsDirectory)) => assert_eq!(r.kind, Kind::Dir),
        (Err(a), Err(b)) => assert_eq!(discriminant(a), discriminant(b), "{a} vs {b}"),
        (a, b) => panic!("{name:?}: resolve gave {a:?}, resolve_file gave {b:?}"),
    }
    let Ok(mut resolved) = resolved else {
        return;
    };
    assert!(
        resolved.path.starts_with(root.dir()),
        "{name:?} resolved outside the root: {}",
        resolved.path.display()
    );
    let opened = resolved.file.metadata().expect("fstat");
    let opened_id = id(&opened);
    assert!(
        fixture.inside.contains(&opened_id),
        "{name:?} opened something not in the root: {}",
        resolved.path.display()
    );
    assert!(!fixture.secrets.contains(&opened_id), "{name:?} opened a secret");
    assert_eq!(
        id(&resolved.metadata),
        opened_id,
        "metadata is not the descriptor's"
    );
    let by_path = std::fs::metadata(&resolved.path).expect("the resolved path exists");
    assert_eq!(id(&by_path), opened_id, "the path does not name the open file");
    match resolved.kind {
        Kind::File => assert!(opened.is_file()),
        Kind::Dir => assert!(opened.is_dir()),
    }
    let text = std::str::from_utf8(name).expect("checked above");
    let canonical = std::fs::canonicalize(root.dir().join(text)).expect("canonical path");
    match resolved.kind {
        Kind::Dir => assert_eq!(
            resolved.path, canonical,
            "{name:?}: a directory's path is not the canonical one"
        ),
        Kind::File => assert_eq!(
            resolved.path,
            root.dir().join(text),
            "{name:?}: a file's path is not the root joined with the name"
        ),
    }
    if resolved.kind == Kind::File {
        let mut contents = Vec::new();
        resolved
            .file
            .by_ref()
            .take(4096)
            .read_to_end(&mut contents)
            .expect("read");
        assert!(
            !contents.windows(SECRET.len()).any(|w| w == SECRET),
            "{name:?} served the secret"
        );
    }
}
