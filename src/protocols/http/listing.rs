//! The HTML page listing a directory's entries, and the two escapes it is
//! built with.
//!
//! Always true of [`render_listing`]'s page:
//! - it is a complete HTML5 document in UTF-8 (`<meta charset="utf-8">`),
//!   titled `Index of /path/`, whatever the names hold;
//! - every piece of text that came from a name or the path goes through
//!   [`escape_html`], so no name can open a tag, an attribute or an entity;
//! - every link is relative to the listed directory and is the entry's name
//!   through [`percent_encode_segment`] (plus `/` for a directory): only
//!   unreserved bytes (RFC 3986 §2.3) stay as they are, so a link holds no
//!   `:`, `?`, `#`, `%`, `/`, quote or space of its own, and percent-decoding
//!   it (RFC 3986 §2.1, as the server's path decoding does) gives the name back
//!   byte for byte;
//! - directories come first, then files, each group in byte order of the
//!   name; directory names end with `/`; the parent (`../`) is listed first,
//!   except at the root `/`;
//! - names that cannot be a single entry (empty, `.`, `..`, or holding `/`)
//!   are left out.
//!
//! Relative links resolve against the page's URL, so the page must be served
//! at a URL ending with `/` (the handler redirects `/dir` to `/dir/`).
//!
//! Cost: about 200 bytes of page per entry. [`render_listing`] builds a
//! whole page (for tests and embedders); the server renders the same page a
//! chunk at a time from the three pieces it is made of, [`page_start`],
//! [`push_row`] and [`page_end`] (see [`super::dir`]).

use std::fmt::Write as _;
use std::time::SystemTime;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::date::format_http_date;

/// One entry of a directory, as the handler read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name (one path segment).
    pub name: String,
    /// Whether it is a directory (listed first, linked with a trailing `/`).
    pub is_dir: bool,
    /// Its size in bytes; not shown for directories.
    pub size: u64,
    /// Its modification time, if known.
    pub modified: Option<SystemTime>,
}

/// The listing page of the directory at `url_path` (the decoded request
/// path, ending with `/`) holding `entries`, in any order, built whole. The
/// server streams the same page a chunk at a time ([`super::dir`]) from
/// [`page_start`], [`push_row`] and [`page_end`].
pub fn render_listing(url_path: &str, entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().filter(|e| is_single_segment(&e.name)).collect();
    sorted.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));
    let mut html = String::with_capacity(640 + 200 * sorted.len());
    page_start(&mut html, url_path);
    for entry in sorted {
        push_row(&mut html, entry);
    }
    page_end(&mut html);
    html
}

/// Appends the start of the page for `url_path`: the document head, the
/// title, the table head and (except at the root `/`) the parent link.
pub fn page_start(html: &mut String, url_path: &str) {
    let title = escape_html(&format!("Index of {url_path}"));
    // Writing to a String cannot fail, so the results of write! are ignored.
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         th,td{{padding:.2em 1.5em .2em 0;text-align:left}}td.size{{text-align:right}}</style>\n\
         </head>\n<body>\n<h1>{title}</h1>\n<table>\n\
         <thead><tr><th>Name</th><th>Size</th><th>Last modified</th></tr></thead>\n<tbody>\n"
    );
    if url_path != "/" {
        html.push_str("<tr><td><a href=\"../\">../</a></td><td class=\"size\">-</td><td>-</td></tr>\n");
    }
}

/// Appends one table row: the entry's link, its size (none for a
/// directory) and its modification time.
pub fn push_row(html: &mut String, entry: &Entry) {
    let slash = if entry.is_dir { "/" } else { "" };
    let size = if entry.is_dir {
        "-".to_owned()
    } else {
        human_size(entry.size)
    };
    let modified = entry.modified.map_or_else(|| "-".to_owned(), format_http_date);
    let _ = writeln!(
        html,
        "<tr><td><a href=\"{}{slash}\">{}{slash}</a></td><td class=\"size\">{size}</td><td>{modified}</td></tr>",
        utf8_percent_encode(&entry.name, SEGMENT),
        html_escape::encode_quoted_attribute(&entry.name),
    );
}

/// Appends the end of the page.
pub fn page_end(html: &mut String) {
    html.push_str("</tbody>\n</table>\n</body>\n</html>\n");
}

/// The bytes [`percent_encode_segment`] escapes: all but the unreserved
/// set `A-Z a-z 0-9 - . _ ~` (RFC 3986 §2.3).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` with every byte outside the unreserved set `A-Z a-z 0-9 - . _ ~`
/// (RFC 3986 §2.3) written as `%XX` (uppercase hex, RFC 3986 §2.1): safe as
/// one path segment of a URL, and in an HTML attribute.
pub fn percent_encode_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// `s` safe as HTML text or a quoted attribute value: `&`, `<`, `>`, `"` and
/// `'` become character references.
pub fn escape_html(s: &str) -> String {
    html_escape::encode_quoted_attribute(s).into_owned()
}

/// Whether `name` can be a directory entry of its own.
fn is_single_segment(name: &str) -> bool {
    !matches!(name, "" | "." | "..") && !name.contains('/')
}

/// `n` bytes for people: `512 B`, `1.5 KiB`, `3.0 GiB` (binary units, one
/// decimal, rounded to nearest).
fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut divisor: u128 = 1;
    for (i, unit) in UNITS.iter().enumerate() {
        divisor *= 1024;
        let tenths = (u128::from(n) * 10 + divisor / 2) / divisor;
        if tenths < 10_240 || i + 1 == UNITS.len() {
            return format!("{}.{} {unit}", tenths / 10, tenths % 10);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::super::request::decode_path;
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn file(name: &str, size: u64) -> Entry {
        Entry {
            name: name.to_owned(),
            is_dir: false,
            size,
            modified: None,
        }
    }

    fn dir(name: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            is_dir: true,
            size: 4096,
            modified: None,
        }
    }

    /// `(href, link text)` of every link on the page, in order.
    fn links(html: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find("<a href=\"") {
            rest = &rest[start + 9..];
            let href_end = rest.find('"').expect("closing quote");
            let text_start = rest.find('>').expect("end of tag") + 1;
            let text_end = rest.find("</a>").expect("closing tag");
            out.push((rest[..href_end].to_owned(), rest[text_start..text_end].to_owned()));
            rest = &rest[text_end..];
        }
        out
    }

    fn unescape_html(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&amp;", "&")
    }

    /// File names cannot hold `/`, so the script tag is left unclosed here;
    /// `<script>alert(1)</script>` itself is checked through the two escapes.
    const ODD_NAMES: [&str; 14] = [
        "with space",
        "<script>alert(1)",
        "<img src=x onerror=alert(1)>",
        "a&b",
        "\"q\"",
        "it's",
        "na\u{ef}ve \u{6f22}\u{5b57}",
        "100%",
        "%41",
        "#hash",
        "?q",
        "a+b",
        "x:y",
        "tab\there",
    ];

    #[test]
    fn page_is_a_complete_utf8_html5_document() {
        let html = render_listing("/docs/", &[file("a.txt", 3)]);
        assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        assert!(html.contains("<meta charset=\"utf-8\">"));
        assert!(html.contains("<title>Index of /docs/</title>"));
        assert!(html.contains("<h1>Index of /docs/</h1>"));
        assert!(html.ends_with("</html>\n"));
        for tag in [
            "html", "head", "body", "table", "thead", "tbody", "title", "style",
        ] {
            assert_eq!(
                html.matches(&format!("<{tag}")).count(),
                html.matches(&format!("</{tag}>")).count()
            );
        }
    }

    #[test]
    fn parent_link_is_listed_except_at_the_root() {
        let root = render_listing("/", &[file("a", 1)]);
        assert!(!root.contains("../"));
        let nested = render_listing("/a/b/", &[file("c", 1)]);
        assert_eq!(
            links(&nested).first(),
            Some(&("../".to_owned(), "../".to_owned()))
        );
        assert_eq!(
            links(&render_listing("/empty/", &[])),
            vec![("../".to_owned(), "../".to_owned())]
        );
    }

    #[test]
    fn directories_come_first_then_names_in_byte_order_with_trailing_slashes() {
        let entries = [
            file("b.txt", 1),
            dir("zeta"),
            file("A.txt", 1),
            dir("alpha"),
            file("a.txt", 1),
        ];
        let got: Vec<String> = links(&render_listing("/", &entries))
            .into_iter()
            .map(|(href, _)| href)
            .collect();
        assert_eq!(got, ["alpha/", "zeta/", "A.txt", "a.txt", "b.txt"]);
        let texts: Vec<String> = links(&render_listing("/", &entries))
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(texts, ["alpha/", "zeta/", "A.txt", "a.txt", "b.txt"]);
    }

    #[test]
    fn odd_names_link_back_to_themselves_and_show_escaped() {
        let mut entries: Vec<Entry> = ODD_NAMES.iter().map(|n| file(n, 1)).collect();
        entries.extend(ODD_NAMES.iter().map(|n| dir(&format!("d {n}"))));
        let base = "/dir with <odd> & 'quotes'/";
        let html = render_listing(base, &entries);
        let found = links(&html);
        assert_eq!(found.len(), 1 + entries.len());
        for entry in &entries {
            let slash = if entry.is_dir { "/" } else { "" };
            let expected = format!("{}{slash}", entry.name);
            let (href, text) = found
                .iter()
                .find(|(_, text)| unescape_html(text) == expected)
                .unwrap_or_else(|| panic!("no link shows {expected:?}"));
            assert!(
                href.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%/".contains(&b)),
                "{href:?} has a reserved byte"
            );
            assert_eq!(
                decode_path(&format!("{base}{href}")),
                Ok(format!("{base}{expected}"))
            );
            assert_eq!(escape_html(&expected), *text);
        }
    }

    #[test]
    fn no_markup_from_names_or_the_path_reaches_the_page() {
        let html = render_listing("/<script>x</script>/", &[file("<script>alert(1)", 1), dir("<b>")]);
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("<title>Index of /&lt;script&gt;x&lt;/script&gt;/</title>"));
        assert!(html.contains(">&lt;script&gt;alert(1)</a>"));
        assert!(html.contains("href=\"%3Cscript%3Ealert%281%29\""));
    }

    #[test]
    fn names_that_are_not_one_segment_are_left_out() {
        let entries = [
            file("", 1),
            file(".", 1),
            dir(".."),
            file("a/b", 1),
            file("...", 1),
            file(".hidden", 1),
        ];
        let got: Vec<String> = links(&render_listing("/", &entries))
            .into_iter()
            .map(|(href, _)| href)
            .collect();
        assert_eq!(got, ["...", ".hidden"]);
    }

    #[test]
    fn sizes_are_human_readable_and_directories_have_none() {
        let html = render_listing("/", &[dir("d"), file("f", 1536)]);
        assert!(html.contains("d/</a></td><td class=\"size\">-</td>"));
        assert!(html.contains("f</a></td><td class=\"size\">1.5 KiB</td>"));
        for (n, text) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1075, "1.0 KiB"),
            (1076, "1.1 KiB"),
            (1024 * 1024 - 1, "1.0 MiB"),
            (5 * 1024 * 1024 * 1024, "5.0 GiB"),
            (1 << 50, "1.0 PiB"),
            (u64::MAX, "16.0 EiB"),
        ] {
            assert_eq!(human_size(n), text, "{n}");
        }
    }

    #[test]
    fn modification_times_are_http_dates_or_a_dash() {
        let mut entry = file("f", 1);
        entry.modified = Some(UNIX_EPOCH + Duration::from_secs(784_111_777));
        let html = render_listing("/", &[entry, file("g", 1)]);
        assert!(html.contains("f</a></td><td class=\"size\">1 B</td><td>Sun, 06 Nov 1994 08:49:37 GMT</td>"));
        assert!(html.contains("g</a></td><td class=\"size\">1 B</td><td>-</td>"));
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        let unreserved = "ABCXYZabcxyz0189-._~";
        assert_eq!(percent_encode_segment(unreserved), unreserved);
        assert_eq!(percent_encode_segment("a b/c?d#e%f"), "a%20b%2Fc%3Fd%23e%25f");
        assert_eq!(percent_encode_segment("\u{6f22}"), "%E6%BC%A2");
        assert_eq!(
            percent_encode_segment("\"'<>&+:;=@"),
            "%22%27%3C%3E%26%2B%3A%3B%3D%40"
        );
        assert_eq!(percent_encode_segment(""), "");
        let every_char: String = (1..=0x7f_u8)
            .map(char::from)
            .chain("\u{e9}\u{1f600}".chars())
            .collect();
        assert_eq!(
            decode_path(&format!("/{}", percent_encode_segment(&every_char))),
            Ok(format!("/{every_char}"))
        );
    }

    #[test]
    fn a_script_tag_name_survives_both_escapes() {
        let name = "<script>alert(1)</script>";
        let href = percent_encode_segment(name);
        assert_eq!(href, "%3Cscript%3Ealert%281%29%3C%2Fscript%3E");
        assert_eq!(decode_path(&format!("/{href}")), Ok(format!("/{name}")));
        assert_eq!(escape_html(name), "&lt;script&gt;alert(1)&lt;/script&gt;");
    }

    #[test]
    fn html_escaping_covers_the_five_special_characters() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain na\u{ef}ve"), "plain na\u{ef}ve");
        assert_eq!(escape_html("&amp;"), "&amp;amp;");
    }
}
