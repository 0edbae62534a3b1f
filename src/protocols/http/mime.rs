//! The `Content-Type` (RFC 9110 §8.3) of a served file, from its name alone,
//! through the table of the `mime_guess` crate (about 1,500 extensions,
//! kept in step with the registries and what browsers expect).
//!
//! Always true:
//! - the type depends only on the last extension, compared ASCII
//!   case-insensitively (`INDEX.HTML` is HTML, `a.tar.gz` is gzip); the
//!   contents are never sniffed;
//! - a name with no extension, an unknown one, or one that is not UTF-8 gets
//!   [`DEFAULT`], which browsers download rather than render;
//! - text types (`text/*`, and JavaScript under either of its names) carry
//!   `charset=utf-8` (RFC 9110 §8.3.2), so a UTF-8 file displays correctly
//!   without the browser guessing.
//!
//! Where the table offers several types for an extension, the first (the
//! one it ranks as preferred) is used: `text/markdown` for `.md`,
//! `application/gzip` for `.gz`.

use std::fmt;
use std::path::Path;

/// The type of anything the table does not know: opaque bytes.
pub const DEFAULT: &str = "application/octet-stream";

/// A file's `Content-Type` value; its `Display` is what goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType {
    essence: &'static str,
}

impl ContentType {
    /// The media type without parameters, such as `text/html`.
    pub fn essence(&self) -> &'static str {
        self.essence
    }

    /// Whether the value carries `charset=utf-8`.
    pub fn is_text(&self) -> bool {
        self.essence.starts_with("text/") || self.essence == "application/javascript"
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.essence)?;
        if self.is_text() {
            f.write_str("; charset=utf-8")?;
        }
        Ok(())
    }
}

/// The `Content-Type` for the file at `path`, from its extension; [`DEFAULT`]
/// when unknown.
pub fn content_type(path: &Path) -> ContentType {
    ContentType {
        essence: mime_guess::from_path(path).first_raw().unwrap_or(DEFAULT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(name: &str) -> String {
        content_type(Path::new(name)).to_string()
    }

    #[test]
    fn common_extensions_have_their_types() {
        for (name, ty) in [
            ("index.html", "text/html; charset=utf-8"),
            ("old.htm", "text/html; charset=utf-8"),
            ("notes.txt", "text/plain; charset=utf-8"),
            ("server.log", "text/plain; charset=utf-8"),
            ("README.md", "text/markdown; charset=utf-8"),
            ("site.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("mod.mjs", "application/javascript; charset=utf-8"),
            ("table.csv", "text/csv; charset=utf-8"),
            ("data.json", "application/json"),
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
            ("bundle.zip", "application/zip"),
            ("src.gz", "application/gzip"),
            ("src.tar", "application/x-tar"),
        ] {
            assert_eq!(of(name), ty, "{name}");
        }
    }

    #[test]
    fn every_text_type_and_only_a_text_type_carries_a_charset() {
        for name in [
            "a.html", "a.rs", "a.toml", "a.xml", "a.png", "a.json", "a.bin", "a",
        ] {
            let ty = content_type(Path::new(name));
            assert_eq!(
                ty.to_string().ends_with("; charset=utf-8"),
                ty.is_text(),
                "{name}"
            );
            assert_eq!(ty.is_text(), ty.essence().starts_with("text/"), "{name}");
        }
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
        assert_eq!(
            content_type(Path::new(OsStr::from_bytes(b"a.\xffhtml"))).essence(),
            DEFAULT
        );
        assert_eq!(
            content_type(Path::new(OsStr::from_bytes(b"\xff.png"))).essence(),
            "image/png"
        );
    }
}
