//! A raw HTTP/1.1 client for the tests: one response read off a socket,
//! whatever its framing (`Content-Length`, chunked, or up to the close).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One response: the status, the fields (names lowercased) and the
/// payload (de-chunked).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first field named `name` (lowercase).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response to a `GET` off `reader`. A chunked body is checked
/// for its framing (RFC 9112 §7.1) and de-chunked; one with neither length
/// nor chunks is read to the close.
#[track_caller]
pub fn read_response(reader: &mut BufReader<TcpStream>) -> Response {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let mut fields = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("field line");
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').expect("name: value");
        fields.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        fields,
        body: Vec::new(),
    };
    if response.status == 304 {
        return response;
    }
    response.body = if response.field("transfer-encoding") == Some("chunked") {
        assert!(response.field("content-length").is_none(), "both framings");
        let mut body = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).expect("chunk size");
            let size = usize::from_str_radix(line.trim_end(), 16).expect("hex chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            assert_eq!(&chunk[size..], b"\r\n", "CRLF after a chunk");
            if size == 0 {
                break body;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = response.field("content-length") {
        let mut body = vec![0; length.parse().expect("length")];
        reader.read_exact(&mut body).expect("body");
        body
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body).expect("body to the close");
        body
    };
    response
}

/// Sends `GET target` with `version` (`HTTP/1.1`, `HTTP/1.0`) on `reader`'s
/// connection and reads the answer.
#[track_caller]
pub fn get(reader: &mut BufReader<TcpStream>, target: &str, version: &str) -> Response {
    let request = format!("GET {target} {version}\r\nHost: test\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes()).expect("request");
    read_response(reader)
}
