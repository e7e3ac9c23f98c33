//! Just enough DER to wrap private keys into PKCS#8 and to rewrite a
//! certificate's issuer name: single-byte tags, definite lengths.
//!
//! Certificates are *parsed* with x509-parser; this module only walks the
//! few structures that no dependency builds for us.

/// Universal tags used here.
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
pub(crate) const SEQUENCE: u8 = 0x30;
/// `[0]` and `[1]`, constructed (EXPLICIT) context tags.
pub(crate) const CONTEXT_0: u8 = 0xa0;
pub(crate) const CONTEXT_1: u8 = 0xa1;

/// One tag-length-value element.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) content: &'a [u8],
    /// Tag, length and content as they were encoded.
    pub(crate) whole: &'a [u8],
}

/// Reads one element; returns it and the bytes after it.
pub(crate) fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), &'static str> {
    let (&tag, rest) = input.split_first().ok_or("unexpected end of data")?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte tags are not expected here");
    }
    let (&first, mut rest) = rest.split_first().ok_or("unexpected end of data")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 {
            return Err("indefinite length is not DER");
        }
        if count > 4 || rest.len() < count {
            return Err("length out of range");
        }
        let (len_bytes, after) = rest.split_at(count);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return Err("element longer than the data");
    }
    let (content, after) = rest.split_at(len);
    let header_len = input.len() - rest.len();
    let tlv = Tlv {
        tag,
        content,
        whole: &input[..header_len + len],
    };
    Ok((tlv, after))
}

/// Reads exactly one element of the expected tag, with nothing after it.
pub(crate) fn read_only(input: &[u8], tag: u8) -> Result<Tlv<'_>, &'static str> {
    let (tlv, rest) = read(input)?;
    if tlv.tag != tag {
        return Err("unexpected element type");
    }
    if !rest.is_empty() {
        return Err("trailing data after the structure");
    }
    Ok(tlv)
}

/// The elements of a constructed value's content, in order.
pub(crate) fn items(mut content: &[u8]) -> Result<Vec<Tlv<'_>>, &'static str> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tlv, rest) = read(content)?;
        out.push(tlv);
        content = rest;
    }
    Ok(out)
}

/// Encodes one element.
pub(crate) fn write(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a constructed element from already encoded parts.
pub(crate) fn write_parts(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    write(tag, &parts.concat())
}

/// Dotted form of an OID's content bytes, for messages.
pub(crate) fn oid_string(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in content {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let encoded = write(OCTET_STRING, &content);
            let (tlv, rest) = read(&encoded).expect("reads back");
            assert!(rest.is_empty());
            assert_eq!(tlv.tag, OCTET_STRING);
            assert_eq!(tlv.content.len(), len);
            assert_eq!(tlv.whole, &encoded[..]);
        }
        assert_eq!(write(NULL, &[]), vec![0x05, 0x00]);
        assert_eq!(&write(OCTET_STRING, &[0; 200])[..3], &[0x04, 0x81, 200]);
    }

    #[test]
    fn rejects_truncated_and_indefinite() {
        assert!(read(&[0x30, 0x05, 0x01]).is_err());
        assert!(read(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(read(&[0x30]).is_err());
        assert!(read(&[]).is_err());
        assert!(read_only(&[0x05, 0x00, 0x00], NULL).is_err());
        assert!(read_only(&[0x05, 0x00], SEQUENCE).is_err());
    }

    #[test]
    fn items_splits_a_sequence() {
        let seq = write_parts(SEQUENCE, &[&write(INTEGER, &[1]), &write(NULL, &[])]);
        let tlv = read_only(&seq, SEQUENCE).expect("sequence");
        let parts = items(tlv.content).expect("items");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].tag, INTEGER);
        assert_eq!(parts[1].tag, NULL);
    }

    #[test]
    fn oid_to_dotted() {
        // 1.2.840.10045.3.1.7 (P-256) and 1.3.132.0.35 (P-521)
        assert_eq!(
            oid_string(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
            "1.2.840.10045.3.1.7"
        );
        assert_eq!(oid_string(&[0x2b, 0x81, 0x04, 0x00, 0x23]), "1.3.132.0.35");
    }
}
