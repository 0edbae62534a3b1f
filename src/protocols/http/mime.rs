//! The `Content-Type` (RFC 9110 §8.3) of a served file, from its name alone.
//!
//! Always true:
//! - the type depends only on the last extension, compared ASCII
//!   case-insensitively (`INDEX.HTML` is HTML, `a.tar.gz` is gzip); the
//!   contents are never sniffed;
//! - a name with no extension, an unknown one, or one that is not UTF-8 gets
//!   [`DEFAULT`], which browsers download rather than render;
//! - text types carry `charset=utf-8` (RFC 9110 §8.3.2), so a UTF-8 file
//!   displays correctly without the browser guessing.
//!
//! The types are the IANA-registered ones where one exists: `text/javascript`
//! (RFC 9239), `application/json` (RFC 8259), `application/wasm`,
//! `image/svg+xml`, `audio/mpeg` for MP3 (RFC 3003), `application/gzip`
//! (RFC 6713); otherwise the one browsers expect (`image/x-icon`,
//! `application/x-tar`, `application/x-bzip2`, `application/x-xz`).

use std::path::Path;

/// The type of anything not in the table: opaque bytes.
pub const DEFAULT: &str = "application/octet-stream";

/// `(extension in lowercase, type)`; a linear scan of a few dozen entries.
const TABLE: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/plain; charset=utf-8"),
    ("rs", "text/plain; charset=utf-8"),
    ("toml", "text/plain; charset=utf-8"),
    ("log", "text/plain; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("json", "application/json"),
    ("xml", "application/xml"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("ico", "image/x-icon"),
    ("pdf", "application/pdf"),
    ("wasm", "application/wasm"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tgz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("bz2", "application/x-bzip2"),
    ("xz", "application/x-xz"),
];

/// The `Content-Type` for the file at `path`, from its extension; [`DEFAULT`]
/// when unknown.
pub fn content_type(path: &Path) -> &'static str {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return DEFAULT;
    };
    TABLE
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(ext))
        .map_or(DEFAULT, |(_, ty)| ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(name: &str) -> &'static str {
        content_type(Path::new(name))
    }

    #[test]
    fn every_listed_extension_has_its_type() {
        let expected = [
            ("index.html", "text/html; charset=utf-8"),
            ("old.htm", "text/html; charset=utf-8"),
            ("notes.txt", "text/plain; charset=utf-8"),
            ("README.md", "text/plain; charset=utf-8"),
            ("main.rs", "text/plain; charset=utf-8"),
            ("Cargo.toml", "text/plain; charset=utf-8"),
            ("server.log", "text/plain; charset=utf-8"),
            ("site.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("mod.mjs", "text/javascript; charset=utf-8"),
            ("data.json", "application/json"),
            ("feed.xml", "application/xml"),
            ("logo.svg", "image/svg+xml"),
            ("a.png", "image/png"),
            ("a.jpg", "image/jpeg"),
            ("a.jpeg", "image/jpeg"),
            ("a.gif", "image/gif"),
            ("a.webp", "image/webp"),
            ("favicon.ico", "image/x-icon"),
            ("paper.pdf", "application/pdf"),
            ("module.wasm", "application/wasm"),
            ("clip.mp4", "video/mp4"),
            ("clip.webm", "video/webm"),
            ("song.mp3", "audio/mpeg"),
            ("song.ogg", "audio/ogg"),
            ("sound.wav", "audio/wav"),
            ("bundle.zip", "application/zip"),
            ("src.gz", "application/gzip"),
            ("src.tgz", "application/gzip"),
            ("src.tar", "application/x-tar"),
            ("src.bz2", "application/x-bzip2"),
            ("src.xz", "application/x-xz"),
            ("table.csv", "text/csv; charset=utf-8"),
        ];
        for (name, ty) in expected {
            assert_eq!(of(name), ty, "{name}");
        }
        assert_eq!(expected.len(), TABLE.len());
    }

    #[test]
    fn extensions_are_case_insensitive() {
        assert_eq!(of("INDEX.HTML"), "text/html; charset=utf-8");
        assert_eq!(of("Photo.JpEg"), "image/jpeg");
    }

    #[test]
    fn only_the_last_extension_counts() {
        assert_eq!(of("release.tar.gz"), "application/gzip");
        assert_eq!(of("page.html.bak"), DEFAULT);
        assert_eq!(of("dir.d/file"), DEFAULT);
        assert_eq!(of("/srv/www/a.b/c.css"), "text/css; charset=utf-8");
    }

    #[test]
    fn unknown_missing_and_odd_extensions_are_octet_stream() {
        for name in [
            "Makefile",
            "a.exe",
            "a.",
            ".html",
            "a.html ",
            "a.h tml",
            "",
            "/",
            "a.ht\u{ef}ml",
        ] {
            assert_eq!(of(name), DEFAULT, "{name:?}");
        }
    }

    #[test]
    fn non_utf8_names_are_octet_stream() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(content_type(Path::new(OsStr::from_bytes(b"a.\xffhtml"))), DEFAULT);
        assert_eq!(
            content_type(Path::new(OsStr::from_bytes(b"\xff.png"))),
            "image/png"
        );
    }
}
