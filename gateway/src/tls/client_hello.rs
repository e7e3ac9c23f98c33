//! The first bytes of a relayed tunnel, read without decrypting: whether they
//! are a TLS ClientHello and, if so, the server name and protocols it asks
//! for. Records, the handshake message and its extensions are parsed by
//! `tls-parser`; this module only joins a ClientHello split across records
//! and refuses what a server could read two ways.

use tls_parser::{
    SNIType, TlsExtension, TlsExtensionType, TlsMessage, TlsMessageHandshake, TlsRecordType,
    parse_tls_client_hello_extensions, parse_tls_handshake_client_hello,
    parse_tls_message_handshake, parse_tls_raw_record,
};

/// The largest ClientHello read (its handshake message, without record
/// headers): far above what browsers and TLS libraries send (a few KiB,
/// post-quantum key shares included).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// The most bytes read before a ClientHello is complete: the message and
/// the headers of the records it is split across, within reason.
pub const MAX_FIRST_FLIGHT: usize = MAX_CLIENT_HELLO + 4 * 1024;

/// Extension of Encrypted Client Hello (draft-ietf-tls-esni): the outer
/// server name is a front's, the real one is encrypted.
pub const ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;

/// What the first bytes of a tunnel are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstFlight {
    /// A whole ClientHello.
    Hello(ClientHello),
    /// Not TLS.
    NotTls,
    /// TLS, or what a TLS server might take for it, but no ClientHello a
    /// server should accept: too large, split too finely, preceded by
    /// another record, SSLv2's, or unreadable.
    Malformed(String),
    /// Nothing usable arrived in time, or the client closed first.
    Silent,
    /// The destination spoke first: no TLS client waits for the server.
    ServerFirst,
}

/// What a ClientHello asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The server name (SNI) as sent, if any.
    pub server_name: Option<String>,
    /// The application protocols offered (ALPN), in order.
    pub alpn: Vec<String>,
    /// Whether the real name is hidden (Encrypted Client Hello, or the
    /// older encrypted SNI): `server_name` is then a front's.
    pub hides_name: bool,
}

/// What [`read`] made of the bytes so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Decided.
    Done(FirstFlight),
    /// Undecided until at least this many bytes are there: reading them
    /// again sooner would only repeat the work (a ClientHello trickled a
    /// byte at a time is parsed once per record, not once per byte).
    NeedAtLeast(usize),
}

/// The most records a ClientHello may be split across. Libraries send it
/// in one (or a few when it is large); thousands of one-byte records are
/// only a way to make the reader work.
pub const MAX_RECORDS: usize = 64;

/// Reads `bytes` (everything the client sent so far).
pub fn read(bytes: &[u8]) -> Reading {
    use Reading::{Done, NeedAtLeast};
    match bytes {
        // A handshake record, version 3.x.
        [0x16, 0x03, ..] => {}
        [0x16] => return NeedAtLeast(2),
        // Another TLS record first (an alert, a ChangeCipherSpec...): a
        // server may skip it and read the ClientHello behind it.
        [0x14..=0x18, 0x03, ..] => {
            return Done(FirstFlight::Malformed(format!(
                "a record of type {} before the ClientHello",
                bytes[0]
            )));
        }
        // SSLv2's ClientHello (2-byte length with the high bit, type 1,
        // version 3.x): it has no server name to judge.
        [first, _, 0x01, 0x03, ..] if first & 0x80 != 0 => {
            return Done(FirstFlight::Malformed(
                "an SSLv2-compatible ClientHello, which carries no server name".to_owned(),
            ));
        }
        [0x14..=0x18] => return NeedAtLeast(2),
        // Until its type and version bytes say it is not SSLv2's.
        [first, ..]
            if first & 0x80 != 0
                && bytes.len() < 4
                && [1, 3].starts_with(bytes.get(2..).unwrap_or_default()) =>
        {
            return NeedAtLeast(bytes.len() + 1);
        }
        [] => return NeedAtLeast(1),
        _ => return Done(FirstFlight::NotTls),
    }
    let mut handshake = Vec::new();
    let mut rest = bytes;
    let mut records = 0;
    loop {
        if let Some(length) = message_length(&handshake) {
            if length > MAX_CLIENT_HELLO {
                return Done(FirstFlight::Malformed(format!(
                    "ClientHello of {length} bytes, more than {MAX_CLIENT_HELLO}"
                )));
            }
            if handshake.len() >= 4 + length {
                // Records behind it (early data) are the server's to read;
                // another handshake message in the same records is not.
                if handshake.len() > 4 + length {
                    return Done(FirstFlight::Malformed(
                        "another handshake message joined to the ClientHello".to_owned(),
                    ));
                }
                return Done(client_hello(&handshake));
            }
        }
        if rest.is_empty() {
            if bytes.len() >= MAX_FIRST_FLIGHT {
                return Done(FirstFlight::Malformed(format!(
                    "no whole ClientHello in the first {MAX_FIRST_FLIGHT} bytes"
                )));
            }
            // At least the next record's header.
            return NeedAtLeast(bytes.len() + 5);
        }
        let record = match parse_tls_raw_record(rest) {
            Ok((after, record)) => {
                rest = after;
                record
            }
            Err(tls_parser::Err::Incomplete(_)) if bytes.len() < MAX_FIRST_FLIGHT => {
                // The whole record: its header, then the length it gives.
                let start = bytes.len() - rest.len();
                let length = rest
                    .get(3..5)
                    .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
                return NeedAtLeast(start + 5 + length);
            }
            Err(_) => {
                return Done(FirstFlight::Malformed(
                    "a record that cannot be read".to_owned(),
                ));
            }
        };
        if record.hdr.record_type != TlsRecordType::Handshake {
            return Done(FirstFlight::Malformed(format!(
                "a {:?} record before the ClientHello was whole",
                record.hdr.record_type
            )));
        }
        records += 1;
        if records > MAX_RECORDS {
            return Done(FirstFlight::Malformed(format!(
                "a ClientHello split across more than {MAX_RECORDS} records"
            )));
        }
        handshake.extend_from_slice(record.data);
    }
}

/// The random of a ServerHello that is a HelloRetryRequest (RFC 8446
/// section 4.1.3): the server asks the client for another ClientHello.
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// What the destination answered a ClientHello with, as far as a relay
/// needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAnswer {
    /// Undecided until at least this many bytes are there.
    NeedAtLeast(usize),
    /// A HelloRetryRequest: the client sends a second ClientHello, which
    /// must ask for what the first did.
    Retry,
    /// Anything else: the handshake goes on encrypted.
    Other,
}

/// Reads the destination's first bytes after a ClientHello. Only its first
/// record is looked at: a server that splits its ServerHello across records
/// is not one a client could use to front another name.
pub fn server_answer(bytes: &[u8]) -> ServerAnswer {
    match bytes {
        [0x16, 0x03, ..] => {}
        [] | [0x16] => return ServerAnswer::NeedAtLeast(2),
        _ => return ServerAnswer::Other,
    }
    let record = match parse_tls_raw_record(bytes) {
        Ok((_, record)) => record,
        Err(tls_parser::Err::Incomplete(_)) => {
            let length = bytes
                .get(3..5)
                .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
            return ServerAnswer::NeedAtLeast(5 + length);
        }
        Err(_) => return ServerAnswer::Other,
    };
    match parse_tls_message_handshake(record.data) {
        Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(hello))))
            if hello.random == HELLO_RETRY_RANDOM =>
        {
            ServerAnswer::Retry
        }
        _ => ServerAnswer::Other,
    }
}

/// A client's second ClientHello, after a HelloRetryRequest: a
/// ChangeCipherSpec record may come first (RFC 8446 appendix D.4), and is
/// skipped.
pub fn read_second(bytes: &[u8]) -> Reading {
    const CHANGE_CIPHER_SPEC: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
    // Each byte of a ChangeCipherSpec can already show it is not one.
    if bytes.len() < CHANGE_CIPHER_SPEC.len() && CHANGE_CIPHER_SPEC.starts_with(bytes) {
        return Reading::NeedAtLeast(bytes.len() + 1);
    }
    match bytes.strip_prefix(&CHANGE_CIPHER_SPEC[..]) {
        Some(rest) => match read(rest) {
            Reading::NeedAtLeast(n) => Reading::NeedAtLeast(n + CHANGE_CIPHER_SPEC.len()),
            done => done,
        },
        None => read(bytes),
    }
}

/// The length of the handshake message `handshake` starts with, once its
/// header is there.
fn message_length(handshake: &[u8]) -> Option<usize> {
    let header = handshake.get(..4)?;
    Some(usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]))
}

/// The handshake message `message` (header included, nothing behind it),
/// read as a ClientHello: every length must account for its bytes exactly,
/// as a strict server reads it.
fn client_hello(message: &[u8]) -> FirstFlight {
    if message[0] != 1 {
        return FirstFlight::Malformed(
            "the first handshake message is not a ClientHello".to_owned(),
        );
    }
    let hello = match parse_tls_handshake_client_hello(&message[4..]) {
        Ok(([], hello)) => hello,
        _ => return FirstFlight::Malformed("a ClientHello that cannot be read".to_owned()),
    };
    let extensions = match hello.ext {
        None => Vec::new(),
        Some(bytes) => match parse_tls_client_hello_extensions(bytes) {
            Ok(([], extensions)) => extensions,
            _ => {
                return FirstFlight::Malformed(
                    "ClientHello extensions that cannot be read".to_owned(),
                );
            }
        },
    };
    let mut read = ClientHello::default();
    let mut names = 0;
    for extension in &extensions {
        match extension {
            TlsExtension::SNI(entries) => {
                names += 1;
                let hosts: Vec<&[u8]> = entries
                    .iter()
                    .filter(|(kind, _)| *kind == SNIType::HostName)
                    .map(|(_, name)| *name)
                    .collect();
                match hosts.as_slice() {
                    [] => {}
                    [name] => match std::str::from_utf8(name) {
                        Ok(name) => read.server_name = Some(name.to_owned()),
                        Err(_) => {
                            return FirstFlight::Malformed(
                                "a server name that is not text".to_owned(),
                            );
                        }
                    },
                    _ => return FirstFlight::Malformed("more than one server name".to_owned()),
                }
            }
            TlsExtension::ALPN(protocols) => {
                read.alpn = protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
            }
            TlsExtension::EncryptedServerName { .. } => read.hides_name = true,
            TlsExtension::Unknown(TlsExtensionType(ENCRYPTED_CLIENT_HELLO), _) => {
                read.hides_name = true;
            }
            _ => {}
        }
    }
    // A server reads one of them; which one is its choice, not ours.
    if names > 1 {
        return FirstFlight::Malformed("more than one server name extension".to_owned());
    }
    FirstFlight::Hello(read)
}

/// A ClientHello record carrying `extensions` (type, data) and nothing of
/// use otherwise, written by hand to reach what no TLS library sends (two
/// names, an Encrypted Client Hello extension without a server that knows
/// it): for tests, and seeds for fuzzing.
#[doc(hidden)]
pub fn forged(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let length = |bytes: &[u8]| u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes();
    let mut listed = Vec::new();
    for (kind, data) in extensions {
        listed.extend_from_slice(&kind.to_be_bytes());
        listed.extend_from_slice(&length(data));
        listed.extend_from_slice(data);
    }
    // Version, random, no session id, one cipher suite, null compression.
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    body.extend_from_slice(&length(&listed));
    body.extend_from_slice(&listed);
    let mut message = vec![0x01, 0x00];
    message.extend_from_slice(&length(&body));
    message.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&length(&message));
    record.extend_from_slice(&message);
    record
}

/// The data of a server name extension listing `names`.
#[doc(hidden)]
pub fn server_names(names: &[&str]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(0);
        list.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
        list.extend_from_slice(name.as_bytes());
    }
    let mut data = u16::try_from(list.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes()
        .to_vec();
    data.extend_from_slice(&list);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `read` decided, if it did.
    fn decided(bytes: &[u8]) -> Option<FirstFlight> {
        match read(bytes) {
            Reading::Done(flight) => Some(flight),
            Reading::NeedAtLeast(n) => {
                assert!(n > bytes.len(), "asks for no more than it has");
                None
            }
        }
    }

    /// A ClientHello record as a TLS library writes it (rustls, with SNI
    /// and ALPN).
    fn real_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server_name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
        let mut client =
            rustls::ClientConnection::new(Arc::new(config), server_name).expect("client");
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).expect("hello");
        bytes
    }

    use std::sync::Arc;

    /// `hello` (one record) split into records of `size` bytes of payload.
    fn split_records(hello: &[u8], size: usize) -> Vec<u8> {
        let (header, payload) = hello.split_at(5);
        let mut out = Vec::new();
        for chunk in payload.chunks(size) {
            out.extend_from_slice(&header[..3]);
            out.extend_from_slice(&u16::try_from(chunk.len()).expect("len").to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn a_real_client_hello_gives_its_name_and_protocols() {
        let hello = real_hello("api.example.com");
        assert_eq!(
            decided(&hello),
            Some(FirstFlight::Hello(ClientHello {
                server_name: Some("api.example.com".to_owned()),
                alpn: vec!["h2".to_owned(), "http/1.1".to_owned()],
                hides_name: false,
            }))
        );
    }

    #[test]
    fn more_bytes_are_waited_for_until_the_hello_is_whole() {
        let hello = real_hello("api.example.com");
        for cut in [0, 1, 2, 5, 40, hello.len() - 1] {
            assert_eq!(decided(&hello[..cut]), None, "cut at {cut}");
        }
        // Within a record, the whole record is waited for.
        assert_eq!(read(&hello[..40]), Reading::NeedAtLeast(hello.len()));
        // Split across records of 16 bytes each, and whole.
        let split = split_records(&hello, 16);
        assert_eq!(decided(&split[..split.len() - 1]), None);
        assert!(
            matches!(decided(&split), Some(FirstFlight::Hello(h)) if h.server_name.as_deref() == Some("api.example.com"))
        );
    }

    #[test]
    fn what_is_not_a_client_hello_says_so() {
        assert_eq!(decided(b"GET / HTTP/1.1\r\n"), Some(FirstFlight::NotTls));
        assert_eq!(
            decided(b"SSH-2.0-OpenSSH_9.6\r\n"),
            Some(FirstFlight::NotTls)
        );
        assert_eq!(decided(&[0x16, 0x01]), Some(FirstFlight::NotTls));
        // A handshake record whose message is not a ClientHello.
        let server_hello_like = [0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
        assert!(matches!(
            decided(&server_hello_like),
            Some(FirstFlight::Malformed(_))
        ));
        // An alert record in the middle of a split ClientHello.
        let hello = real_hello("a.example");
        let mut split = split_records(&hello, 100);
        split.splice(105..105, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
        assert!(matches!(decided(&split), Some(FirstFlight::Malformed(_))));
        // Garbage inside a handshake record: everything after the message
        // header (an opaque extension value would still read as one).
        let mut garbage = hello.clone();
        garbage[9..].fill(0xff);
        assert!(matches!(decided(&garbage), Some(FirstFlight::Malformed(_))));
    }

    #[test]
    fn what_a_server_could_read_past_is_refused() {
        let hello = real_hello("a.example");
        // Another record first: an alert, a ChangeCipherSpec.
        for first in [
            [0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00],
            [0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0x00],
        ] {
            let mut flight = first[..].to_vec();
            flight.truncate(5 + usize::from(first[4]));
            flight.extend_from_slice(&hello);
            assert!(
                matches!(decided(&flight), Some(FirstFlight::Malformed(_))),
                "{first:?}"
            );
        }
        // SSLv2's ClientHello.
        assert!(matches!(
            decided(&[0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15]),
            Some(FirstFlight::Malformed(_))
        ));
        // A thousand one-byte records.
        assert!(
            matches!(decided(&split_records(&hello, 1)), Some(FirstFlight::Malformed(why)) if why.contains("records"))
        );
        // Bytes inside the hello that no length accounts for.
        let mut padded = forged(&[(0, server_names(&["a.example"]))]);
        let body_end = padded.len();
        padded.extend_from_slice(&[0, 0, 0, 0]);
        let grow = |at: usize, by: u16, bytes: &mut Vec<u8>| {
            let value = u16::from_be_bytes([bytes[at], bytes[at + 1]]) + by;
            bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
        };
        grow(3, 4, &mut padded);
        grow(7, 4, &mut padded);
        assert_eq!(body_end + 4, padded.len());
        assert!(matches!(decided(&padded), Some(FirstFlight::Malformed(_))));
        // Early data behind the hello is not the hello's: it is decided alone.
        let mut early = hello.clone();
        early.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x03, 1, 2, 3]);
        assert!(matches!(decided(&early), Some(FirstFlight::Hello(_))));
    }

    #[test]
    fn an_oversized_client_hello_is_refused_without_waiting_for_it() {
        // A header announcing a 1 MiB message.
        let huge = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x10, 0x00, 0x00];
        assert!(
            matches!(decided(&huge), Some(FirstFlight::Malformed(why)) if why.contains("more than"))
        );
        // Records that never complete a message, past the bound.
        let mut endless = Vec::new();
        endless.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x3f, 0xff]);
        while endless.len() < MAX_FIRST_FLIGHT {
            endless.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x00]);
        }
        assert!(matches!(decided(&endless), Some(FirstFlight::Malformed(_))));
    }

    #[test]
    fn a_name_a_server_could_read_two_ways_is_refused() {
        let one = forged(&[(0, server_names(&["a.example"]))]);
        assert!(
            matches!(decided(&one), Some(FirstFlight::Hello(h)) if h.server_name.as_deref() == Some("a.example"))
        );
        let two_entries = forged(&[(0, server_names(&["a.example", "b.example"]))]);
        assert!(matches!(
            decided(&two_entries),
            Some(FirstFlight::Malformed(_))
        ));
        let two_extensions = forged(&[
            (0, server_names(&["a.example"])),
            (0, server_names(&["b.example"])),
        ]);
        assert!(matches!(
            decided(&two_extensions),
            Some(FirstFlight::Malformed(_))
        ));
        let none = forged(&[]);
        assert_eq!(
            decided(&none),
            Some(FirstFlight::Hello(ClientHello::default()))
        );
    }

    /// A ServerHello record with `random`.
    fn server_hello(random: [u8; 32]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&random);
        body.extend_from_slice(&[0x00, 0x13, 0x01, 0x00, 0x00, 0x00]);
        let mut record = vec![
            0x16,
            0x03,
            0x03,
            0x00,
            4 + body.len() as u8,
            0x02,
            0x00,
            0x00,
        ];
        record.push(body.len() as u8);
        record.extend_from_slice(&body);
        record
    }

    #[test]
    fn a_retry_request_is_told_from_a_server_hello() {
        let retry = server_hello(HELLO_RETRY_RANDOM);
        assert_eq!(server_answer(&retry), ServerAnswer::Retry);
        assert_eq!(server_answer(&server_hello([9; 32])), ServerAnswer::Other);
        assert_eq!(
            server_answer(&retry[..10]),
            ServerAnswer::NeedAtLeast(retry.len())
        );
        assert_eq!(server_answer(b"SSH-2.0-x"), ServerAnswer::Other);
        assert_eq!(
            server_answer(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]),
            ServerAnswer::Other
        );
        // The second ClientHello, with or without a ChangeCipherSpec first.
        let hello = real_hello("a.example");
        let mut with_ccs = vec![0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
        with_ccs.extend_from_slice(&hello);
        for flight in [&hello, &with_ccs] {
            assert!(matches!(
                read_second(flight),
                Reading::Done(FirstFlight::Hello(_))
            ));
        }
        assert_eq!(read_second(&with_ccs[..3]), Reading::NeedAtLeast(4));
        assert!(matches!(
            read_second(&with_ccs[..20]),
            Reading::NeedAtLeast(n) if n == with_ccs.len()
        ));
    }

    /// Found by fuzzing (`fuzz/corpus/client_hello/`): after a retry,
    /// `14 16 03` is no ChangeCipherSpec and no ClientHello, but the reader
    /// asked for six bytes before saying so; a client that sent three and
    /// waited was held to the handshake timeout. What it asks for now is
    /// never more than what decides.
    #[test]
    fn no_more_is_asked_for_than_decides() {
        assert_eq!(read_second(&[]), Reading::NeedAtLeast(1));
        assert_eq!(read_second(&[0x14]), Reading::NeedAtLeast(2));
        assert_eq!(
            read_second(&[0x14, 0x16, 0x03]),
            Reading::Done(FirstFlight::NotTls)
        );
        assert_eq!(read(&[0x80]), Reading::NeedAtLeast(2));
        assert_eq!(read(&[0x80, 0x2e]), Reading::NeedAtLeast(3));
        assert_eq!(
            read(&[0x80, 0x2e, 0x05]),
            Reading::Done(FirstFlight::NotTls)
        );
    }

    #[test]
    fn an_encrypted_client_hello_is_seen() {
        let ech = forged(&[
            (0, server_names(&["public.example"])),
            (ENCRYPTED_CLIENT_HELLO, vec![0; 40]),
        ]);
        assert!(matches!(
            decided(&ech),
            Some(FirstFlight::Hello(ClientHello {
                hides_name: true,
                ..
            }))
        ));
    }
}
