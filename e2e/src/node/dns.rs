//! A DNS query, to see the cluster DNS answer without a resolver library.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

/// One DNS query over UDP for the A record of `name`: the first address
/// answered, if any.
pub fn resolve_a(server: Ipv4Addr, name: &str) -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // Header: id, flags (recursion desired), 1 question.
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        query.push(u8::try_from(label.len()).ok()?);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    socket.send_to(&query, (server, 53)).ok()?;
    let mut buf = [0u8; 512];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    let answer = &buf[..len];
    let rcode = answer.get(3)? & 0x0f;
    let count = u16::from_be_bytes([*answer.get(6)?, *answer.get(7)?]);
    if answer.get(..2)? != [0x12, 0x34] || rcode != 0 || count == 0 {
        return None;
    }
    // Skip the question (same length as sent), then read answer records.
    let mut at = query.len();
    for _ in 0..count {
        // Name: a pointer (2 bytes) or labels.
        loop {
            let len = *answer.get(at)?;
            if len & 0xc0 == 0xc0 {
                at += 2;
                break;
            }
            at += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        let rtype = u16::from_be_bytes([*answer.get(at)?, *answer.get(at + 1)?]);
        let rdlen = usize::from(u16::from_be_bytes([
            *answer.get(at + 8)?,
            *answer.get(at + 9)?,
        ]));
        let data = answer.get(at + 10..at + 10 + rdlen)?;
        if rtype == 1 && rdlen == 4 {
            return Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + rdlen;
    }
    None
}
