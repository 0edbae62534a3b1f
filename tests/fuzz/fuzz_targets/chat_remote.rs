//! What a chat server takes from its room's Redis channel: any bytes, as a
//! message published there by another server (or by anything else that
//! can publish on the channel).
//!
//! Checked for every input:
//! - `decode_message` never panics; what it returns is made safe to show:
//!   no control character but tab, no U+2028 or U+2029, in any text or nick;
//! - each record it returns, given to a linked room spread over servers,
//!   sends its members whole lines only (each ends in `\n` and holds no
//!   other), and `/who` afterwards is one line;
//! - a message `encode_message` makes from the records' own events decodes
//!   back to them.
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;

use evloop::protocols::chat::{
    decode_message, encode_message, ChatConfig, MemberId, Outbox, Remote, Room, RoomEvent,
};
use evloop::protocols::echo::EchoDatagram;
use evloop::Reactor;
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// Two keys of real sources, made once: a member needs a key.
    static KEYS: RefCell<Option<(Reactor, Vec<evloop::Key>)>> = const { RefCell::new(None) };
}

fn keys() -> Vec<evloop::Key> {
    KEYS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (_, keys) = cell.get_or_insert_with(|| {
            let mut reactor = Reactor::new().expect("reactor");
            let addr = "127.0.0.1:0".parse().expect("addr");
            let keys = (0..2)
                .map(|_| reactor.bind_udp(addr, EchoDatagram).expect("bind"))
                .collect();
            (reactor, keys)
        });
        keys.clone()
    })
}

fn safe(text: &str) -> bool {
    !text
        .chars()
        .any(|c| (c.is_control() && c != '\t') || c == '\u{2028}' || c == '\u{2029}')
}

fn check_lines(out: &mut Outbox) {
    for delivery in out.drain(..) {
        let line = &delivery.line[..];
        assert!(line.ends_with(b"\n"), "a whole line: {line:?}");
        assert!(!line[..line.len() - 1].contains(&b'\n'), "one line: {line:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((_server, records)) = decode_message(data) else {
        return;
    };
    let mut events = Vec::new();
    for record in &records {
        let texts: Vec<&String> = match record {
            Remote::Said(t) | Remote::Joined(t) | Remote::Left(t) => vec![t],
            Remote::Renamed(a, b) => vec![a, b],
            Remote::Presence(n) | Remote::Known(n) => n.iter().collect(),
            Remote::Gone => vec![],
        };
        for text in texts {
            assert!(safe(text), "unsafe text {text:?}");
        }
        match record {
            Remote::Said(t) => events.push(RoomEvent::Said(Rc::from(format!("{t}\n").into_bytes()))),
            Remote::Joined(t) => events.push(RoomEvent::Joined(t.clone())),
            Remote::Left(t) => events.push(RoomEvent::Left(t.clone())),
            Remote::Renamed(a, b) => events.push(RoomEvent::Renamed(a.clone(), b.clone())),
            _ => {}
        }
    }

    let keys = keys();
    let mut room = Room::wide(ChatConfig::default());
    room.set_linked(true);
    let mut out = Outbox::new();
    let members: Vec<MemberId> = keys.iter().map(|&k| MemberId::Stream(k)).collect();
    for (i, id) in members.iter().enumerate() {
        room.join(id.clone(), format!("m{i}"), &mut out).expect("space");
        for claim in room.take_claims() {
            room.claimed(claim, evloop::protocols::chat::ClaimAnswer::Won, &mut out);
        }
    }
    out.clear();
    for record in records.iter().cloned() {
        room.remote("other", record, &mut out);
        check_lines(&mut out);
    }
    room.handle_line(&members[0], b"/who", &mut out);
    assert_eq!(out.len(), 1, "one /who line to a stream member");
    check_lines(&mut out);

    let again = encode_message("other", &events);
    let (server, decoded) = decode_message(&again).expect("its own message");
    assert_eq!(server, "other");
    let plain: Vec<Remote> = records
        .into_iter()
        .filter(|r| !matches!(r, Remote::Presence(_) | Remote::Known(_) | Remote::Gone))
        .collect();
    assert_eq!(decoded, plain);
});
