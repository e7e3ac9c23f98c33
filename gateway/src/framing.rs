//! Request heads as the client wrote them, before hyper reads them.
//!
//! A request with both `Transfer-Encoding` and `Content-Length` is the shape
//! of request smuggling (RFC 9112 section 6.3). hyper accepts it and drops the
//! `Content-Length`, so the service can no longer tell; this wrapper parses
//! each request head on the way in (following the body framing to find the
//! next one) and queues one flag per head, which the service takes in order.
//! Once the stream stops being HTTP/1 requests (HTTP/2, CONNECT, an upgrade,
//! anything unparsable) it only passes bytes through.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::observed::{Observed, Observer};

/// Longest request head followed; beyond it hyper refuses the request anyway.
const MAX_HEAD: usize = 256 * 1024;
/// Longest chunk-size line followed.
const MAX_CHUNK_LINE: usize = 4096;

/// One flag per request head seen, in order: whether it carried both
/// `Transfer-Encoding` and `Content-Length`.
#[derive(Clone, Debug, Default)]
pub struct Heads(Arc<Mutex<VecDeque<bool>>>);

impl Heads {
    /// Takes the flag of the next request; `false` when none was queued (a
    /// stream that is not HTTP/1).
    pub fn next_is_ambiguous(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or(false)
    }

    /// Takes every flag queued so far, in order.
    pub fn drain(&self) -> Vec<bool> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    fn push(&self, ambiguous: bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(ambiguous);
    }
}

#[derive(Debug)]
enum State {
    /// Reading a request head.
    Head(Vec<u8>),
    /// In a body of known length: bytes left.
    Body(u64),
    /// In a chunked body: the chunk-size line so far.
    ChunkSize(Vec<u8>),
    /// In a chunk: bytes left, then its line end.
    ChunkData(u64),
    /// After a chunk's data: up to its `\n`.
    ChunkEnd,
    /// In the trailers: length of the current line.
    Trailers(usize),
    /// Not HTTP/1 requests any more.
    Opaque,
}

/// A stream whose request heads are inspected as they are read.
pub type Inspected<S> = Observed<S, RequestHeads>;

/// Follows the HTTP/1 requests in what a client sends, head by head.
#[derive(Debug)]
pub struct RequestHeads {
    state: State,
    heads: Heads,
}

impl RequestHeads {
    /// Before the first request; flags go to `heads`.
    pub fn new(heads: Heads) -> RequestHeads {
        RequestHeads {
            state: State::Head(Vec::new()),
            heads,
        }
    }

    /// Follows the requests through `input`, the next bytes the client sent
    /// (what each read passes on; public for tests and fuzzing). A head that
    /// arrives whole in one read is parsed where it lies; only one split
    /// across reads is copied, until it is complete.
    pub fn feed(&mut self, input: &[u8]) {
        let mut data = input;
        while !data.is_empty() {
            match &mut self.state {
                State::Opaque => return,
                State::Head(buffer) if buffer.is_empty() => {
                    match Self::after_head(&self.heads, data) {
                        Some((next, length)) => {
                            self.state = next;
                            data = &data[length..];
                        }
                        None if data.len() > MAX_HEAD => {
                            self.state = State::Opaque;
                            return;
                        }
                        None => {
                            buffer.extend_from_slice(data);
                            return;
                        }
                    }
                }
                State::Head(buffer) => {
                    buffer.extend_from_slice(data);
                    let head = std::mem::take(buffer);
                    match Self::after_head(&self.heads, &head) {
                        None if head.len() > MAX_HEAD => self.state = State::Opaque,
                        None => self.state = State::Head(head),
                        Some((next, length)) => {
                            self.state = next;
                            // What followed the head starts with nothing
                            // buffered, so this goes one call deep at most.
                            self.feed(&head[length..]);
                        }
                    }
                    return;
                }
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => match data.iter().position(|b| *b == b'\n') {
                    None => {
                        line.extend_from_slice(data);
                        if line.len() > MAX_CHUNK_LINE {
                            self.state = State::Opaque;
                        }
                        return;
                    }
                    Some(end) => {
                        line.extend_from_slice(&data[..end]);
                        data = &data[end + 1..];
                        self.state = match chunk_size(line) {
                            Some(0) => State::Trailers(0),
                            Some(size) => State::ChunkData(size),
                            None => State::Opaque,
                        };
                    }
                },
                State::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::ChunkEnd;
                    }
                }
                State::ChunkEnd => match data.iter().position(|b| *b == b'\n') {
                    None => return,
                    Some(end) => {
                        data = &data[end + 1..];
                        self.state = State::ChunkSize(Vec::new());
                    }
                },
                State::Trailers(line) => {
                    match data[0] {
                        b'\n' if *line == 0 => self.state = State::Head(Vec::new()),
                        b'\n' => *line = 0,
                        b'\r' => {}
                        _ => *line += 1,
                    }
                    data = &data[1..];
                }
            }
        }
    }

    /// Parses a head; when it is complete, queues its flag on `heads` and
    /// returns the state of its body and the head's length.
    fn after_head(heads: &Heads, head: &[u8]) -> Option<(State, usize)> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        let length = match request.parse(head) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => return Some((State::Opaque, head.len())),
        };
        let method = request.method.unwrap_or_default();
        if method.eq_ignore_ascii_case("CONNECT") {
            heads.push(false);
            return Some((State::Opaque, length));
        }
        // The last Transfer-Encoding (its last coding decides), the first
        // Content-Length, and whether the request asks for an upgrade.
        let mut transfer_encoding = None;
        let mut content_length = None;
        let (mut upgrade, mut connection_upgrade) = (false, false);
        for header in request.headers.iter() {
            let name = header.name;
            if name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = Some(header.value);
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = content_length.or(Some(header.value));
            } else if name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            } else if name.eq_ignore_ascii_case("connection") {
                connection_upgrade |= has_token(header.value, "upgrade");
            }
        }
        heads.push(transfer_encoding.is_some() && content_length.is_some());
        let body = if upgrade && connection_upgrade {
            State::Opaque
        } else if let Some(codings) = transfer_encoding {
            if last_token_is(codings, "chunked") {
                State::ChunkSize(Vec::new())
            } else {
                State::Opaque
            }
        } else {
            match content_length.map(|v| String::from_utf8_lossy(v).trim().parse::<u64>()) {
                None | Some(Ok(0)) => State::Head(Vec::new()),
                Some(Ok(length)) => State::Body(length),
                Some(Err(_)) => State::Opaque,
            }
        };
        Some((body, length))
    }
}

/// Whether one of the comma-separated tokens of a header value is `token`
/// (ASCII case aside; the value is copied only when it is not UTF-8).
fn has_token(value: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(value)
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the last comma-separated token of a header value is `token`.
fn last_token_is(value: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(value)
        .split(',')
        .next_back()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The size of a chunk-size line (`1a;ext=1\r`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let hex = text.split(';').next()?.trim();
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

impl Observer for RequestHeads {
    fn read(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Opaque) {
            self.feed(bytes);
        }
    }

    fn wrote(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(stream: &[u8], pieces: usize) -> Vec<bool> {
        let heads = Heads::default();
        let mut follower = RequestHeads::new(heads.clone());
        for piece in stream.chunks(stream.len().div_ceil(pieces).max(1)) {
            follower.feed(piece);
        }
        heads.drain()
    }

    const PIPELINE: &[u8] = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 26\r\n\r\n\r\nContent-Length: 1\r\n\r\nxyz\
GET http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\n\r\n\r\nX\r\n0\r\nT: 1\r\n\r\n\
POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    #[test]
    fn each_head_is_found_through_bodies_that_look_like_heads() {
        for pieces in [1, 2, 7, PIPELINE.len()] {
            assert_eq!(
                flags(PIPELINE, pieces),
                [false, false, true],
                "{pieces} pieces"
            );
        }
    }

    #[test]
    fn a_head_split_anywhere_is_followed_alike() {
        // Heads whole in one read are parsed in place, split ones buffered:
        // every split of the stream into two reads must find the same flags.
        for at in 0..=PIPELINE.len() {
            let heads = Heads::default();
            let mut follower = RequestHeads::new(heads.clone());
            follower.feed(&PIPELINE[..at]);
            follower.feed(&PIPELINE[at..]);
            assert_eq!(heads.drain(), [false, false, true], "split at {at}");
        }
    }

    #[test]
    fn other_protocols_are_passed_through() {
        // The HTTP/2 preface is not an HTTP/1 request: nothing is queued.
        assert_eq!(
            flags(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\n", 1),
            Vec::<bool>::new()
        );
        assert_eq!(
            flags(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 3),
            [false]
        );
        assert_eq!(flags(b"\x16\x03\x01garbage", 1), Vec::<bool>::new());
    }
}
