//! `switchboard.v1.LookupResponse`, written by hand so that a pop cached as protobuf bytes goes out
//! as it is: no decoding and encoding again on the hot path (issue #25).
//!
//! On the wire it is exactly the generated message: `ScreenPop pop = 1; PopSource source = 2;`.
//! Clients decode it into [`LookupResponse::pop`] as before. The server may instead set
//! [`LookupResponse::encoded_pop`], an [`EncodedPop`]: the cached `ScreenPop` bytes, followed by
//! the fields a lookup adds to them (`dialed_campaign = 6`, `caller_kind = 7`). The cached bytes
//! never hold those two fields and end with lower-numbered ones, so the result is the same bytes,
//! in the same field order, as encoding the whole `ScreenPop` (a test below checks it).

use std::fmt;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use super::v1;

/// The answer of `ScreenPopService.Lookup`.
#[derive(Clone, PartialEq, Default)]
pub struct LookupResponse {
    pub pop: Option<v1::ScreenPop>,
    /// A `PopSource`.
    pub source: i32,
    /// When set, written in place of `pop` (which is then ignored by the encoder).
    pub encoded_pop: Option<EncodedPop>,
}

/// A `ScreenPop` already encoded: a cached pop plus what the lookup adds to it.
#[derive(Clone, PartialEq, Default)]
pub struct EncodedPop(Vec<u8>);

impl EncodedPop {
    /// The cached pop's bytes (a `ScreenPop` without `dialed_campaign` and `caller_kind`), with
    /// the campaign that owns the dialed number and the caller's kind appended.
    pub fn new(
        mut cached: Vec<u8>,
        dialed_campaign: Option<&v1::CardOffer>,
        caller_kind: v1::CallerKind,
    ) -> Self {
        if let Some(offer) = dialed_campaign {
            encoding::message::encode(6, offer, &mut cached);
        }
        let kind = i32::from(caller_kind);
        if kind != 0 {
            encoding::int32::encode(7, &kind, &mut cached);
        }
        Self(cached)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl LookupResponse {
    /// `source` as the enum (an unknown value reads as UNSPECIFIED), like a generated getter.
    pub fn source(&self) -> v1::PopSource {
        v1::PopSource::try_from(self.source).unwrap_or_default()
    }

    pub fn set_source(&mut self, source: v1::PopSource) {
        self.source = source.into();
    }

    /// The customers a pop's bytes show (`card` and `candidates`, field 1 of each), read without
    /// decoding the rest; `None` if the bytes are not a well-formed `ScreenPop` at this depth.
    pub fn customer_ids(pop: &[u8]) -> Option<Vec<String>> {
        let mut ids = Vec::new();
        let mut buf = pop;
        while buf.has_remaining() {
            let (tag, wire_type) = encoding::decode_key(&mut buf).ok()?;
            if (tag == 3 || tag == 4) && wire_type == WireType::LengthDelimited {
                let len = usize::try_from(encoding::decode_varint(&mut buf).ok()?).ok()?;
                let (mut card, rest) = buf.split_at_checked(len)?;
                buf = rest;
                while card.has_remaining() {
                    let (tag, wire_type) = encoding::decode_key(&mut card).ok()?;
                    if tag == 1 && wire_type == WireType::LengthDelimited {
                        let mut id = String::new();
                        encoding::string::merge(
                            wire_type,
                            &mut id,
                            &mut card,
                            DecodeContext::default(),
                        )
                        .ok()?;
                        ids.push(id);
                        break;
                    }
                    encoding::skip_field(wire_type, tag, &mut card, DecodeContext::default())
                        .ok()?;
                }
            } else {
                encoding::skip_field(wire_type, tag, &mut buf, DecodeContext::default()).ok()?;
            }
        }
        Some(ids)
    }
}

impl Message for LookupResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.encoded_pop, &self.pop) {
            (Some(encoded), _) => {
                encoding::encode_key(1, WireType::LengthDelimited, buf);
                encoding::encode_varint(encoded.0.len() as u64, buf);
                buf.put_slice(&encoded.0);
            }
            (None, Some(pop)) => encoding::message::encode(1, pop, buf),
            (None, None) => {}
        }
        if self.source != 0 {
            encoding::int32::encode(2, &self.source, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::message::merge(
                wire_type,
                self.pop.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            2 => encoding::int32::merge(wire_type, &mut self.source, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let pop = match (&self.encoded_pop, &self.pop) {
            (Some(encoded), _) => {
                encoding::key_len(1)
                    + encoding::encoded_len_varint(encoded.0.len() as u64)
                    + encoded.0.len()
            }
            (None, Some(pop)) => encoding::message::encoded_len(1, pop),
            (None, None) => 0,
        };
        let source = if self.source == 0 {
            0
        } else {
            encoding::int32::encoded_len(2, &self.source)
        };
        pop + source
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// No numbers or names: only where the pop came from and whether it was passed through.
impl fmt::Debug for LookupResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupResponse")
            .field("pop", &self.pop)
            .field("source", &self.source)
            .field("encoded", &self.encoded_pop.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(candidates: usize) -> v1::ScreenPop {
        let card = |n: usize| v1::CustomerCard {
            customer_id: format!("0000000{n}-0000-0000-0000-000000000000"),
            display_name: format!("Customer {n}"),
            version: 3,
            open_cases: vec![v1::CardCase {
                id: "k".into(),
                subject: "s".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut pop = v1::ScreenPop {
            normalized_number: "+14155550100".into(),
            candidate_count: i32::try_from(candidates.max(1)).unwrap_or(0),
            ..Default::default()
        };
        if candidates == 0 {
            pop.set_match(v1::MatchKind::Exact);
            pop.card = Some(card(1));
        } else {
            pop.set_match(v1::MatchKind::Multiple);
            pop.candidates = (1..=candidates).map(card).collect();
        }
        pop
    }

    fn normal(pop: v1::ScreenPop, source: v1::PopSource) -> Vec<u8> {
        LookupResponse {
            pop: Some(pop),
            source: source.into(),
            encoded_pop: None,
        }
        .encode_to_vec()
    }

    #[test]
    fn a_passed_through_pop_is_byte_for_byte_the_normal_encoding() {
        let offer = v1::CardOffer {
            campaign_id: "g".into(),
            campaign_name: "Winter".into(),
            offer_text: "Half price".into(),
        };
        for candidates in [0, 3] {
            for dialed in [None, Some(&offer)] {
                let cached = pop(candidates).encode_to_vec();
                let mut whole = pop(candidates);
                whole.dialed_campaign = dialed.cloned();
                whole.set_caller_kind(v1::CallerKind::Number);
                let expected = normal(whole.clone(), v1::PopSource::Cache);

                let passed = LookupResponse {
                    pop: None,
                    source: v1::PopSource::Cache.into(),
                    encoded_pop: Some(EncodedPop::new(cached, dialed, v1::CallerKind::Number)),
                };
                assert_eq!(passed.encoded_len(), expected.len());
                let bytes = passed.encode_to_vec();
                assert_eq!(
                    bytes, expected,
                    "{candidates} candidates, dialed {dialed:?}"
                );
                let decoded = LookupResponse::decode(bytes.as_slice()).expect("decodes");
                assert_eq!(decoded.pop, Some(whole));
                assert_eq!(decoded.source(), v1::PopSource::Cache);
            }
        }
    }

    #[test]
    fn the_customers_shown_are_read_from_the_bytes() {
        let exact = pop(0).encode_to_vec();
        assert_eq!(
            LookupResponse::customer_ids(&exact),
            Some(vec!["00000001-0000-0000-0000-000000000000".to_owned()])
        );
        let multiple = pop(3).encode_to_vec();
        assert_eq!(
            LookupResponse::customer_ids(&multiple).map(|ids| ids.len()),
            Some(3)
        );
        let none = v1::ScreenPop::default().encode_to_vec();
        assert_eq!(LookupResponse::customer_ids(&none), Some(vec![]));
        assert_eq!(
            LookupResponse::customer_ids(&exact[..exact.len() - 3]),
            None
        );
    }
}
