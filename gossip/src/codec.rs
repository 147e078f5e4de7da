//! The byte encoding of gossip [`Message`]s, so that the node can carry
//! them in its framed protocol (as opaque payloads) without the protocol
//! crate knowing gossip's types.
//!
//! Little-endian throughout: `tag: u8` (1 `Syn`, 2 `Ack`, 3 `Ack2`, 4
//! `SynWindow`, 5 `Probe`, 6 `ProbeAck`, 7 `ProbeRequest`, 8
//! `AckWindow`), then lists as
//! `count: u32` and items. An optional node (`on_behalf_of`) is a `u8`
//! flag and, when set, a `u64`. Tags 4 to 7 came with windows and
//! indirect probes: a node from before them refuses those messages, which
//! costs it only their news (clusters that fit one `Syn` send no windows). A digest is `node, generation,
//! heartbeat, max_version` (`u64` each); a delta is `node, generation,
//! heartbeat` then a list of entries (`key` and `value` each a `u16`
//! length and bytes, then `version: u64`). Decoding checks every count
//! against the bytes left, so no input can make it allocate more than it
//! was given or panic.

use crate::error::Error;
use crate::gossiper::{Beat, Delta, Digest, Message, NodeId};

const DIGEST_BYTES: usize = 32;
/// Longest entry key or value accepted.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Encodes a message.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.approximate_bytes() + 8);
    match message {
        Message::Syn(digests) => {
            out.push(1);
            put_digests(&mut out, digests);
        }
        Message::Ack { deltas, requests } => {
            out.push(2);
            put_deltas(&mut out, deltas);
            put_digests(&mut out, requests);
        }
        Message::Ack2(deltas) => {
            out.push(3);
            put_deltas(&mut out, deltas);
        }
        Message::SynWindow {
            deltas,
            digests,
            beats,
            complete,
            downs,
        } => {
            out.push(4);
            put_deltas(&mut out, deltas);
            put_digests(&mut out, digests);
            put_beats(&mut out, beats);
            out.push(u8::from(*complete));
            put_beats(&mut out, downs);
        }
        Message::Probe { on_behalf_of } => {
            out.push(5);
            put_node(&mut out, *on_behalf_of);
        }
        Message::ProbeAck {
            on_behalf_of,
            heartbeat,
        } => {
            out.push(6);
            put_node(&mut out, *on_behalf_of);
            put_deltas(&mut out, std::slice::from_ref(heartbeat));
        }
        Message::ProbeRequest { target } => {
            out.push(7);
            put_u64(&mut out, target.0);
        }
        Message::AckWindow {
            deltas,
            requests,
            beats,
        } => {
            out.push(8);
            put_deltas(&mut out, deltas);
            put_digests(&mut out, requests);
            put_beats(&mut out, beats);
        }
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Beats in ascending node order: each node as the difference from the
/// previous one (a varint), the generation tag, the heartbeat (a varint),
/// the version tag.
fn put_beats(out: &mut Vec<u8>, beats: &[Beat]) {
    put_u32(out, beats.len());
    let mut previous = 0u64;
    for b in beats {
        put_varint(out, b.node.0.wrapping_sub(previous));
        out.push(b.generation_tag);
        put_varint(out, b.heartbeat);
        out.push(b.version_tag);
        previous = b.node.0;
    }
}

fn put_node(out: &mut Vec<u8>, node: Option<NodeId>) {
    match node {
        Some(n) => {
            out.push(1);
            put_u64(out, n.0);
        }
        None => out.push(0),
    }
}

/// Decodes a message; any malformed input is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Message, Error> {
    let mut r = Reader { buf: bytes };
    let message = match r.u8()? {
        1 => Message::Syn(r.digests()?),
        2 => Message::Ack {
            deltas: r.deltas()?,
            requests: r.digests()?,
        },
        3 => Message::Ack2(r.deltas()?),
        4 => Message::SynWindow {
            deltas: r.deltas()?,
            digests: r.digests()?,
            beats: r.beats()?,
            complete: match r.u8()? {
                0 => false,
                1 => true,
                f => return Err(Error::Malformed(format!("complete flag {f}"))),
            },
            downs: r.beats()?,
        },
        5 => Message::Probe {
            on_behalf_of: r.node()?,
        },
        6 => {
            let on_behalf_of = r.node()?;
            let mut deltas = r.deltas()?;
            if deltas.len() != 1 {
                return Err(Error::Malformed(format!(
                    "a probe answer with {} heartbeats",
                    deltas.len()
                )));
            }
            Message::ProbeAck {
                on_behalf_of,
                heartbeat: deltas.remove(0),
            }
        }
        7 => Message::ProbeRequest {
            target: NodeId(r.u64()?),
        },
        8 => Message::AckWindow {
            deltas: r.deltas()?,
            requests: r.digests()?,
            beats: r.beats()?,
        },
        t => return Err(Error::Malformed(format!("unknown message tag {t}"))),
    };
    if !r.buf.is_empty() {
        return Err(Error::Malformed(format!("{} trailing bytes", r.buf.len())));
    }
    Ok(message)
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v.min(u32::MAX as usize) as u32).to_le_bytes());
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    // Longer texts are refused by `Gossiper::set` callers' limits; cut at
    // a character boundary rather than emit an undecodable message.
    let mut end = s.len().min(MAX_TEXT_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_digests(out: &mut Vec<u8>, digests: &[Digest]) {
    put_u32(out, digests.len());
    for d in digests {
        put_u64(out, d.node.0);
        put_u64(out, d.generation);
        put_u64(out, d.heartbeat);
        put_u64(out, d.max_version);
    }
}

fn put_deltas(out: &mut Vec<u8>, deltas: &[Delta]) {
    put_u32(out, deltas.len());
    for d in deltas {
        put_u64(out, d.node.0);
        put_u64(out, d.generation);
        put_u64(out, d.heartbeat);
        put_u32(out, d.entries.len());
        for (key, value, version) in &d.entries {
            put_text(out, key);
            put_text(out, value);
            put_u64(out, *version);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(Error::Malformed(format!(
                "needed {n} more bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if shift == 63 && byte > 1 {
                    break;
                }
                return Ok(v);
            }
        }
        Err(Error::Malformed("varint longer than 64 bits".into()))
    }

    fn beats(&mut self) -> Result<Vec<Beat>, Error> {
        let n = self.count(4)?;
        let mut previous = 0u64;
        (0..n)
            .map(|_| {
                let node = previous.wrapping_add(self.varint()?);
                previous = node;
                Ok(Beat {
                    node: NodeId(node),
                    generation_tag: self.u8()?,
                    heartbeat: self.varint()?,
                    version_tag: self.u8()?,
                })
            })
            .collect()
    }

    fn node(&mut self) -> Result<Option<NodeId>, Error> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(NodeId(self.u64()?))),
            f => Err(Error::Malformed(format!("node flag {f}"))),
        }
    }

    fn u64(&mut self) -> Result<u64, Error> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(w))
    }

    fn count(&mut self, min_item: usize) -> Result<usize, Error> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4)?);
        let n = u32::from_le_bytes(w) as usize;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(Error::Malformed(format!(
                "{n} items do not fit in {} bytes",
                self.buf.len()
            )));
        }
        Ok(n)
    }

    fn text(&mut self) -> Result<String, Error> {
        let mut w = [0u8; 2];
        w.copy_from_slice(self.take(2)?);
        let n = u16::from_le_bytes(w) as usize;
        if n > MAX_TEXT_BYTES {
            return Err(Error::Malformed(format!("text of {n} bytes")));
        }
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| Error::Malformed("text is not UTF-8".into()))
    }

    fn digests(&mut self) -> Result<Vec<Digest>, Error> {
        let n = self.count(DIGEST_BYTES)?;
        (0..n)
            .map(|_| {
                Ok(Digest {
                    node: NodeId(self.u64()?),
                    generation: self.u64()?,
                    heartbeat: self.u64()?,
                    max_version: self.u64()?,
                })
            })
            .collect()
    }

    fn deltas(&mut self) -> Result<Vec<Delta>, Error> {
        let n = self.count(28)?;
        (0..n)
            .map(|_| {
                let node = NodeId(self.u64()?);
                let generation = self.u64()?;
                let heartbeat = self.u64()?;
                let m = self.count(12)?;
                let entries = (0..m)
                    .map(|_| Ok((self.text()?, self.text()?, self.u64()?)))
                    .collect::<Result<_, Error>>()?;
                Ok(Delta {
                    node,
                    generation,
                    heartbeat,
                    entries,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest() -> impl Strategy<Value = Digest> {
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(n, g, h, v)| Digest {
            node: NodeId(n),
            generation: g,
            heartbeat: h,
            max_version: v,
        })
    }

    fn delta() -> impl Strategy<Value = Delta> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec((".{0,8}", ".{0,16}", any::<u64>()), 0..4),
        )
            .prop_map(|(n, g, h, entries)| Delta {
                node: NodeId(n),
                generation: g,
                heartbeat: h,
                entries,
            })
    }

    /// Beats in ascending node order, as a window lists them.
    fn beats() -> impl Strategy<Value = Vec<Beat>> {
        proptest::collection::vec((any::<u64>(), any::<u8>(), any::<u64>(), any::<u8>()), 0..8)
            .prop_map(|mut beats| {
                beats.sort();
                beats
                    .into_iter()
                    .map(|(n, generation_tag, heartbeat, version_tag)| Beat {
                        node: NodeId(n),
                        generation_tag,
                        heartbeat,
                        version_tag,
                    })
                    .collect()
            })
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            proptest::collection::vec(digest(), 0..6).prop_map(Message::Syn),
            (
                proptest::collection::vec(delta(), 0..4),
                proptest::collection::vec(digest(), 0..4)
            )
                .prop_map(|(deltas, requests)| Message::Ack { deltas, requests }),
            proptest::collection::vec(delta(), 0..4).prop_map(Message::Ack2),
            (
                proptest::collection::vec(delta(), 0..3),
                proptest::collection::vec(digest(), 0..6),
                beats(),
                any::<bool>(),
                beats(),
            )
                .prop_map(|(deltas, digests, beats, complete, downs)| {
                    Message::SynWindow {
                        deltas,
                        digests,
                        beats,
                        complete,
                        downs,
                    }
                }),
            proptest::option::of(any::<u64>().prop_map(NodeId))
                .prop_map(|on_behalf_of| Message::Probe { on_behalf_of }),
            (proptest::option::of(any::<u64>().prop_map(NodeId)), delta()).prop_map(
                |(on_behalf_of, heartbeat)| Message::ProbeAck {
                    on_behalf_of,
                    heartbeat
                }
            ),
            any::<u64>().prop_map(|t| Message::ProbeRequest { target: NodeId(t) }),
            (
                proptest::collection::vec(delta(), 0..3),
                proptest::collection::vec(digest(), 0..3),
                beats(),
            )
                .prop_map(|(deltas, requests, beats)| Message::AckWindow {
                    deltas,
                    requests,
                    beats,
                }),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(m in message()) {
            prop_assert_eq!(decode(&encode(&m)).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn a_truncated_message_is_an_error(m in message(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&m);
            let at = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..at]).is_err());
        }
    }

    proptest! {
        #[test]
        fn the_size_estimate_is_the_encoded_size(m in message()) {
            let encoded = encode(&m).len();
            let estimate = m.approximate_bytes();
            if matches!(m, Message::SynWindow { .. } | Message::AckWindow { .. }) {
                prop_assert_eq!(estimate, encoded);
            }
        }
    }

    #[test]
    fn a_huge_claimed_count_is_refused_before_allocating() {
        let mut bytes = vec![1];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bytes), Err(Error::Malformed(_))));
    }
}
