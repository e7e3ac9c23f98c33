//! A DNS server on 127.0.0.1 (UDP) that answers every query with NXDOMAIN,
//! except names starting with `slow.`, which it never answers, and names
//! starting with `a-only.`, whose A query gets 127.0.0.1 and whose AAAA query
//! gets no answer at all.

use std::net::{SocketAddr, UdpSocket};

pub struct FakeDns {
    pub addr: SocketAddr,
}

impl FakeDns {
    pub fn start() -> FakeDns {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let addr = socket.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                if let Some(reply) = answer(&buf[..len]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        FakeDns { addr }
    }
}

/// NXDOMAIN for the first question, or nothing for `slow.` names.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root label, then type and class.
    let mut i = 12;
    let mut first_label = Vec::new();
    while i < query.len() && query[i] != 0 {
        let len = query[i] as usize;
        if first_label.is_empty() {
            first_label = query.get(i + 1..i + 1 + len)?.to_vec();
        }
        i += 1 + len;
    }
    let question_end = i + 5;
    if question_end > query.len() || first_label == b"slow" {
        return None;
    }
    let qtype = u16::from_be_bytes([query[i + 1], query[i + 2]]);
    let answer_a = first_label == b"a-only" && qtype == 1;
    if first_label == b"a-only" && !answer_a {
        return None;
    }
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[0..2]); // id
    let rd = query[2] & 0x01;
    reply.push(0x80 | rd); // QR, RD copied
    reply.push(if answer_a { 0x80 } else { 0x80 | 0x03 }); // RA, RCODE = NOERROR or NXDOMAIN
    reply.extend_from_slice(&[0, 1, 0, u8::from(answer_a), 0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..question_end]);
    if answer_a {
        // Name (pointer to the question), A, IN, TTL 60, 4 bytes: 127.0.0.1.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(reply)
}
