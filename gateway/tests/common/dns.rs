//! A DNS server on 127.0.0.1 (UDP) that answers every query with NXDOMAIN,
//! except names starting with `slow.`, which it never answers.

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
    let mut reply = Vec::with_capacity(question_end);
    reply.extend_from_slice(&query[0..2]); // id
    let rd = query[2] & 0x01;
    reply.push(0x80 | rd); // QR, RD copied
    reply.push(0x80 | 0x03); // RA, RCODE = NXDOMAIN
    reply.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question, no records
    reply.extend_from_slice(&query[12..question_end]);
    Some(reply)
}
