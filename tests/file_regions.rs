//! File downloads to a reader that keeps pace: each region must be followed
//! by the next even when the socket never fills (the queue empties without
//! ever backing up), and other connections must still be served meanwhile.
mod common;

use std::io::Read;
use std::time::Instant;

use common::*;
use evloop::protocols::echo::Echo;
use evloop::protocols::file::FileServer;
use evloop::Addr;

#[test]
fn fast_reader_gets_a_multi_region_file_whole_while_others_are_served() {
    const SIZE: usize = 80 * 1024 * 1024 + 5; // five regions and a bit
    let root = std::env::temp_dir().join(format!("evloop-regions-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("big"), pattern(SIZE, 21)).expect("file");
    let serve_root = root.clone();
    let server = start(move |reactor| {
        let files = reactor
            .listen_tcp(any_port(), FileServer::new(&serve_root).expect("root"))
            .expect("listen");
        let echo = reactor.listen_tcp(any_port(), |_: &Addr| Echo).expect("listen");
        let addr = |key| reactor.local_addr(key).and_then(|a| a.as_inet()).expect("addr");
        (addr(files), addr(echo))
    });
    let (files, echo) = server.info;
    let downloader = std::thread::spawn(move || {
        let mut stream = connect(files);
        write_all(&mut stream, b"big");
        let mut got = Vec::with_capacity(SIZE);
        stream.read_to_end(&mut got).expect("download");
        got
    });
    // While the download runs flat out, an echo round trip still completes.
    let mut pinger = connect(echo);
    let started = Instant::now();
    write_all(&mut pinger, b"ping");
    assert_eq!(read_exact(&mut pinger, 4), b"ping");
    assert!(started.elapsed() < STEP);
    let got = downloader.join().expect("downloader");
    assert_eq!(got.len(), SIZE, "every region arrived");
    assert!(got == pattern(SIZE, 21));
    std::fs::remove_dir_all(&root).expect("cleanup");
}

#[test]
fn file_that_shrinks_mid_download_ends_in_a_reset_not_a_clean_eof() {
    const SIZE: usize = 16 * 1024 * 1024;
    let root = std::env::temp_dir().join(format!("evloop-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("root");
    let path = root.join("shrinks");
    std::fs::write(&path, pattern(SIZE, 22)).expect("file");
    let serve_root = root.clone();
    let server = start(move |reactor| {
        let files = reactor
            .listen_tcp(any_port(), FileServer::new(&serve_root).expect("root"))
            .expect("listen");
        reactor.local_addr(files).and_then(|a| a.as_inet()).expect("addr")
    });
    let mut client = connect(server.info);
    write_all(&mut client, b"shrinks");
    let mut first = vec![0; 64 * 1024];
    client.read_exact(&mut first).expect("the download started");
    // Cut the file far below what has been sent or queued so far.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(1024 * 1024))
        .expect("truncate");
    let mut rest = Vec::new();
    let outcome = client.read_to_end(&mut rest);
    assert!(
        outcome.is_err(),
        "a clean EOF after {} bytes would pass for a whole file",
        first.len() + rest.len()
    );
    std::fs::remove_dir_all(&root).expect("cleanup");
}
