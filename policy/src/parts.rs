//! A compiled policy too large for one ConfigMap, delivered in parts: the
//! operator gzips its JSON and cuts the stream into numbered part
//! ConfigMaps, and the policy ConfigMap holds a [`Manifest`] (each part's
//! name and digest, and the whole stream's) instead of the JSON. The
//! gateway reads the parts the manifest names and installs the policy only
//! when every digest matches: parts caught between two versions (the
//! operator writes the parts first, then the manifest) are refused, never
//! mixed. One definition for both sides; pure, no I/O.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Key of the [`Manifest`] (JSON) in the policy ConfigMap, in place of
/// [`crate::objects::POLICY_KEY`].
pub const MANIFEST_KEY: &str = "policy-parts.json";

/// Key of a part ConfigMap's `binaryData`: its slice of the gzip stream.
pub const PART_KEY: &str = "policy.json.gz.part";

/// The most one part holds, in bytes: under the 1 MiB an API server lets a
/// ConfigMap's data hold, with room for the key.
pub const PART_BYTES: usize = 1_000_000;

/// The most parts a policy may take (the gateway's Role names each, in
/// both sets).
pub const MAX_PARTS: usize = 32;

/// The largest policy JSON the gateway unpacks, in bytes: a bound on what a
/// forged manifest could make it allocate.
pub const MAX_POLICY_BYTES: usize = 512 * 1024 * 1024;

/// The two sets of names a policy's parts alternate between: a new version
/// goes to the set the manifest in place does not name, so the parts it
/// names are never rewritten under it (a gateway that starts while the
/// operator is halfway through, or after it was refused a part, still reads
/// a whole policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartSet {
    /// `<policy>-part-a-<n>`.
    A,
    /// `<policy>-part-b-<n>`.
    B,
}

impl PartSet {
    /// The other set.
    pub fn other(self) -> PartSet {
        match self {
            PartSet::A => PartSet::B,
            PartSet::B => PartSet::A,
        }
    }

    /// The set of the part `name` of the policy ConfigMap `policy`, if it
    /// is one.
    pub fn of(policy: &str, name: &str) -> Option<PartSet> {
        let rest = name.strip_prefix(policy)?.strip_prefix("-part-")?;
        match rest.split_once('-')? {
            ("a", _) => Some(PartSet::A),
            ("b", _) => Some(PartSet::B),
            _ => None,
        }
    }
}

/// Part `index` (from 1) of set `set` of the policy ConfigMap `policy`.
pub fn part_name(policy: &str, set: PartSet, index: usize) -> String {
    let letter = match set {
        PartSet::A => 'a',
        PartSet::B => 'b',
    };
    format!("{policy}-part-{letter}-{index}")
}

/// What the policy ConfigMap holds when the policy comes in parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// How the parts' concatenation is encoded: `gzip`.
    pub encoding: String,
    /// `sha256:<hex>` of the concatenation.
    pub sha256: String,
    /// Bytes of the policy JSON once unpacked.
    pub size: usize,
    /// In order.
    pub parts: Vec<Part>,
}

/// One part ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Part {
    /// The ConfigMap's name.
    pub name: String,
    /// `sha256:<hex>` of its [`PART_KEY`].
    pub sha256: String,
}

/// A policy split: the manifest and each part's bytes, in order.
#[derive(Debug)]
pub struct Split {
    /// For the policy ConfigMap.
    pub manifest: Manifest,
    /// For the part ConfigMaps the manifest names.
    pub parts: Vec<Vec<u8>>,
}

/// Why a policy cannot be split or put back together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartsError {
    /// More than [`MAX_PARTS`] parts or [`MAX_POLICY_BYTES`] of JSON.
    #[error(
        "the compiled policy is {json} bytes, {compressed} gzipped: over the {limit} bytes its part ConfigMaps may hold, or the {MAX_POLICY_BYTES} bytes a gateway unpacks"
    )]
    TooLarge {
        /// Bytes of JSON.
        json: usize,
        /// Bytes of gzip.
        compressed: usize,
        /// Bytes the parts may hold.
        limit: usize,
    },
    /// The manifest is not one.
    #[error("the manifest is malformed: {0}")]
    Manifest(String),
    /// A part is missing or holds another version.
    #[error("ConfigMap {name} {problem}: the parts are being rewritten, or were changed by hand")]
    Part {
        /// The part.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The stream does not unpack to the manifest's JSON.
    #[error("the parts do not unpack to a policy: {0}")]
    Unpack(String),
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for byte in Sha256::digest(bytes) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Gzips `json` and cuts it into parts of at most `part_bytes`, named by
/// `name` (index from 1), at most `max_parts` of them. The same JSON gives
/// the same bytes, so rewriting an unchanged policy changes nothing.
pub fn split(
    json: &str,
    name: impl Fn(usize) -> String,
    part_bytes: usize,
    max_parts: usize,
) -> Result<Split, PartsError> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec does not fail.
    let _ = encoder.write_all(json.as_bytes());
    let stream = encoder.finish().unwrap_or_default();
    let limit = part_bytes * max_parts;
    if stream.len() > limit || json.len() > MAX_POLICY_BYTES {
        return Err(PartsError::TooLarge {
            json: json.len(),
            compressed: stream.len(),
            limit,
        });
    }
    let parts: Vec<Vec<u8>> = stream.chunks(part_bytes).map(<[u8]>::to_vec).collect();
    let manifest = Manifest {
        encoding: "gzip".to_owned(),
        sha256: sha256(&stream),
        size: json.len(),
        parts: parts
            .iter()
            .enumerate()
            .map(|(i, bytes)| Part {
                name: name(i + 1),
                sha256: sha256(bytes),
            })
            .collect(),
    };
    Ok(Split { manifest, parts })
}

impl Manifest {
    /// Reads the manifest JSON of a policy ConfigMap.
    pub fn from_json(text: &str) -> Result<Manifest, PartsError> {
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|e| PartsError::Manifest(e.to_string()))?;
        if manifest.encoding != "gzip" {
            return Err(PartsError::Manifest(format!(
                "encoding {:?} is not gzip",
                manifest.encoding
            )));
        }
        if manifest.parts.is_empty() || manifest.parts.len() > MAX_PARTS {
            return Err(PartsError::Manifest(format!(
                "{} parts: from 1 to {MAX_PARTS} are read",
                manifest.parts.len()
            )));
        }
        if manifest.size > MAX_POLICY_BYTES {
            return Err(PartsError::Manifest(format!(
                "{} bytes unpacked, over the {MAX_POLICY_BYTES} a gateway reads",
                manifest.size
            )));
        }
        Ok(manifest)
    }

    /// The manifest as the policy ConfigMap holds it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The policy JSON from the parts' bytes, in the manifest's order (None:
    /// that ConfigMap or its key is missing). Every digest is checked before
    /// anything is unpacked, and no more than the manifest's size is.
    pub fn assemble(&self, parts: Vec<Option<Vec<u8>>>) -> Result<String, PartsError> {
        if parts.len() != self.parts.len() {
            return Err(PartsError::Unpack(format!(
                "{} parts read where the manifest names {}",
                parts.len(),
                self.parts.len()
            )));
        }
        let mut stream = Vec::new();
        for (part, bytes) in self.parts.iter().zip(parts) {
            let problem = match bytes {
                None => Some(format!("is missing or has no {PART_KEY}")),
                Some(bytes) if sha256(&bytes) != part.sha256 => Some(format!(
                    "holds {} where {} is named",
                    sha256(&bytes),
                    part.sha256
                )),
                Some(bytes) => {
                    stream.extend_from_slice(&bytes);
                    None
                }
            };
            if let Some(problem) = problem {
                return Err(PartsError::Part {
                    name: part.name.clone(),
                    problem,
                });
            }
        }
        if sha256(&stream) != self.sha256 {
            return Err(PartsError::Unpack(format!(
                "the parts join to {}, where {} is named",
                sha256(&stream),
                self.sha256
            )));
        }
        let mut json = Vec::with_capacity(self.size);
        GzDecoder::new(stream.as_slice())
            .take(self.size as u64 + 1)
            .read_to_end(&mut json)
            .map_err(|e| PartsError::Unpack(e.to_string()))?;
        if json.len() != self.size {
            return Err(PartsError::Unpack(format!(
                "{} bytes unpacked where the manifest says {}",
                json.len(),
                self.size
            )));
        }
        String::from_utf8(json).map_err(|e| PartsError::Unpack(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_of(domains: usize) -> String {
        let names: Vec<String> = (0..domains)
            .map(|n| format!("\"host-{n:07}.example.com\""))
            .collect();
        format!("{{\"formatVersion\":1,\"values\":[{}]}}", names.join(","))
    }

    fn name(i: usize) -> String {
        part_name("egress-policy", PartSet::A, i)
    }

    #[test]
    fn part_names_say_their_set() {
        let b = part_name("egress-policy", PartSet::B, 3);
        assert_eq!(b, "egress-policy-part-b-3");
        assert_eq!(PartSet::of("egress-policy", &b), Some(PartSet::B));
        assert_eq!(PartSet::of("egress-policy", &name(1)), Some(PartSet::A));
        assert_eq!(PartSet::B.other(), PartSet::A);
        for other in [
            "egress-policy",
            "egress-policy-part-c-1",
            "other-policy-part-a-1",
            "egress-policy-part-a",
        ] {
            assert_eq!(PartSet::of("egress-policy", other), None, "{other}");
        }
    }

    #[test]
    fn parts_put_back_together_give_the_json_and_the_same_json_the_same_parts() {
        let json = policy_of(100_000);
        let split = split(&json, name, 100_000, 32).expect("split");
        assert!(split.parts.len() > 1, "{}", split.parts.len());
        assert!(split.parts.iter().all(|p| p.len() <= 100_000));
        assert_eq!(split.manifest.parts[0].name, "egress-policy-part-a-1");
        let manifest = Manifest::from_json(&split.manifest.to_json()).expect("manifest");
        let parts = split.parts.iter().cloned().map(Some).collect();
        assert_eq!(manifest.assemble(parts).expect("assembled"), json);
        let again = super::split(&json, name, 100_000, 32).expect("split");
        assert_eq!(again.manifest, split.manifest);
        assert_eq!(again.parts, split.parts);
    }

    #[test]
    fn a_policy_over_the_parts_limit_is_refused_with_its_sizes() {
        let json = policy_of(100_000);
        let error = split(&json, name, 10_000, 4).expect_err("too large");
        assert!(
            error
                .to_string()
                .starts_with(&format!("the compiled policy is {} bytes", json.len())),
            "{error}"
        );
        let PartsError::TooLarge {
            limit, compressed, ..
        } = error
        else {
            panic!("{error:?}");
        };
        assert_eq!(limit, 40_000);
        assert!(compressed > limit);
    }

    #[test]
    fn a_missing_stale_or_swapped_part_is_named_and_nothing_is_unpacked() {
        let first = split(&policy_of(50_000), name, 50_000, 32).expect("split");
        let second = split(&policy_of(60_000), name, 50_000, 32).expect("split");
        let parts = |split: &Split| -> Vec<Option<Vec<u8>>> {
            split.parts.iter().cloned().map(Some).collect()
        };
        let mut missing = parts(&first);
        missing[1] = None;
        let error = first.manifest.assemble(missing).expect_err("missing");
        assert_eq!(
            error.to_string(),
            "ConfigMap egress-policy-part-a-2 is missing or has no policy.json.gz.part: the parts are being rewritten, or were changed by hand"
        );
        // A part of the next version beside the rest of this one (its
        // first parts may be byte for byte this one's: gzip of a shared
        // prefix; the last holds the trailer and differs).
        let last = first.parts.len() - 1;
        let mut mixed = parts(&first);
        mixed[last] = second.parts[last].clone().into();
        let error = first.manifest.assemble(mixed).expect_err("mixed");
        let named = format!("egress-policy-part-a-{}", last + 1);
        assert!(
            matches!(&error, PartsError::Part { name, .. } if *name == named),
            "{error}"
        );
        // Fewer parts than named: not read as the stream's start.
        let mut fewer = parts(&first);
        fewer.pop();
        let error = first.manifest.assemble(fewer).expect_err("fewer");
        assert!(
            error
                .to_string()
                .contains("parts read where the manifest names"),
            "{error}"
        );
        let mut swapped = parts(&first);
        swapped.swap(0, 1);
        assert!(first.manifest.assemble(swapped).is_err());
    }

    #[test]
    fn a_manifest_that_lies_about_the_size_is_refused_before_it_can_exhaust_memory() {
        let json = policy_of(10_000);
        let split = split(&json, name, PART_BYTES, MAX_PARTS).expect("split");
        let parts: Vec<Option<Vec<u8>>> = split.parts.iter().cloned().map(Some).collect();
        let mut short = split.manifest.clone();
        short.size = 100;
        let error = short.assemble(parts.clone()).expect_err("short");
        assert!(
            error
                .to_string()
                .contains("101 bytes unpacked where the manifest says 100"),
            "{error}"
        );
        let mut huge = split.manifest.clone();
        huge.size = MAX_POLICY_BYTES + 1;
        let error = Manifest::from_json(&huge.to_json()).expect_err("huge");
        assert!(error.to_string().contains("over the"), "{error}");
        for bad in [
            "{}",
            "{\"encoding\":\"zstd\",\"sha256\":\"\",\"size\":1,\"parts\":[{\"name\":\"a\",\"sha256\":\"\"}]}",
        ] {
            assert!(
                matches!(Manifest::from_json(bad), Err(PartsError::Manifest(_))),
                "{bad}"
            );
        }
    }
}
