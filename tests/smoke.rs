mod common;
use common::*;
use evloop::{protocols::echo::Echo, Addr};
use std::io::Write;
use std::time::Duration;

#[test]
fn echo_round_trip_smoke() {
    let server = start(|r| {
        let key = r.listen_tcp(any_port(), |_: &Addr| Echo).unwrap();
        r.local_addr(key).unwrap().as_inet().unwrap()
    });
    let mut c = connect(server.info);
    write_all(&mut c, b"hello");
    assert_eq!(read_exact(&mut c, 5), b"hello");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"");
    c.flush().unwrap();
    assert_eq!(server.shutdown(Duration::from_secs(2)), 0);
}
