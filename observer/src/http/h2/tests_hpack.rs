//! HPACK decoding against an independent encoder (`httlib-hpack`), and the dynamic table's
//! unknown entries: what a decoder that joined late may say, and what it must not invent.

use proptest::prelude::*;

use super::hpack::{BlockStats, Decoder, HeaderList, HpackError, MAX_DECODED};
use super::table::{MAX_TABLE, STATIC};
use super::tests_build::Enc;

fn decode(d: &mut Decoder, block: &[u8]) -> (Result<(), HpackError>, Vec<(String, String)>, u16) {
    let mut list = HeaderList::default();
    let mut stats = BlockStats::default();
    let r = d.decode(block, &mut list, &mut stats, &|_| true);
    let fields = list
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    (r, fields, list.unknown)
}

fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn static_table_is_rfc_7541_appendix_a() {
    let theirs = httlib_hpack::table::Table::default();
    for (i, (name, value)) in STATIC.iter().enumerate() {
        let (n, v) = theirs.get(i as u32 + 1).expect("index in their table");
        assert_eq!(
            (n, v),
            (name.as_bytes(), value.as_bytes()),
            "index {}",
            i + 1
        );
        // And an indexed field decodes to it.
        let mut d = Decoder::fresh();
        let (r, fields, unknown) = decode(&mut d, &[0x80 | (i as u8 + 1)]);
        assert_eq!((r, unknown), (Ok(()), 0));
        assert_eq!(fields, owned(&[(name, value)]));
    }
    assert!(
        theirs.get(62).is_none(),
        "61 static entries, empty dynamic table"
    );
}

#[test]
fn blocks_of_a_real_encoder_decode_with_indexing_and_huffman() {
    let mut enc = Enc::new();
    let mut d = Decoder::fresh();
    let blocks: [&[(&str, &str)]; 3] = [
        &[
            (":method", "GET"),
            (":path", "/users/1?x=é"),
            (":authority", "api.example"),
            ("authorization", "Bearer abc.def"),
            ("x-custom", "v"),
        ],
        &[
            (":method", "GET"),
            (":path", "/users/1?x=é"),
            (":authority", "api.example"),
            ("authorization", "Bearer abc.def"),
            ("x-custom", "w"),
        ],
        &[(":method", "PATCH"), ("x-custom", "v"), ("x-custom", "w")],
    ];
    for fields in blocks {
        let block = enc.block(fields);
        let (r, got, unknown) = decode(&mut d, &block);
        assert_eq!((r, unknown), (Ok(()), 0));
        assert_eq!(got, owned(fields));
    }
    // The second block reused entries the first inserted: it is much shorter.
    assert!(enc.block(blocks[1]).len() < 12);
}

#[test]
fn a_size_update_evicts_and_the_exact_table_knows_its_end() {
    let mut enc = Enc::new();
    let mut d = Decoder::fresh();
    let fields = [("x-a", "1111111111"), ("x-b", "2222222222")];
    let (r, _, _) = decode(&mut d, &enc.block(&fields));
    assert_eq!(r, Ok(()));
    // Room for one entry (45 bytes each): x-a is evicted.
    let mut block = enc.resize(50);
    block.extend(enc.block(&[("x-b", "2222222222")]));
    let (r, got, unknown) = decode(&mut d, &block);
    assert_eq!((r, unknown), (Ok(()), 0));
    assert_eq!(got, owned(&[("x-b", "2222222222")]));
    // Index 63 is past the table of a connection seen from its start: an error, counted as
    // one unknown field, and the table is then out of step.
    let (r, got, unknown) = decode(&mut d, &[0xbe, 0xbf]);
    assert_eq!(r, Err(HpackError::Index));
    assert_eq!((got, unknown), (owned(&[("x-b", "2222222222")]), 1));
    assert!(d.table.has_unknown());
    let (r, got, unknown) = decode(&mut d, &[0x82, 0xbe]);
    assert_eq!((r, got, unknown), (Ok(()), owned(&[(":method", "GET")]), 1));
}

#[test]
fn a_joined_decoder_marks_old_entries_unknown_and_stays_in_step() {
    let mut d = Decoder::joined();
    // An indexed reference to an entry from before: unknown.
    let (r, got, unknown) = decode(&mut d, &[0x82, 0xbe, 0x84]);
    assert_eq!((r, unknown), (Ok(()), 1));
    assert_eq!(got, owned(&[(":method", "GET"), (":path", "/")]));
    // A literal with incremental indexing whose name is an old entry's: its value is known,
    // its name is not, and it takes index 62.
    let mut block = vec![0x40 | 62, 2];
    block.extend_from_slice(b"v1");
    let (r, got, unknown) = decode(&mut d, &block);
    assert_eq!((r, got, unknown), (Ok(()), vec![], 1));
    // A new literal: index 62, the unknown-name one now 63.
    let mut block = vec![0x40, 3];
    block.extend_from_slice(b"x-a");
    block.extend_from_slice(&[1, b'1']);
    let (r, got, _) = decode(&mut d, &block);
    assert_eq!((r, got), (Ok(()), owned(&[("x-a", "1")])));
    let (r, got, unknown) = decode(&mut d, &[0xbe, 0xbf, 0xc0]);
    // 62 known, 63 known value but unknown name, 64 from before: unknown.
    assert_eq!((r, got, unknown), (Ok(()), owned(&[("x-a", "1")]), 2));
    // A literal that names an unknown entry but is not indexed adds nothing.
    let mut block = vec![0x0f, 0x31, 1, b'z'];
    block.extend_from_slice(&[0xbe]);
    let (r, got, unknown) = decode(&mut d, &block);
    assert_eq!((r, got, unknown), (Ok(()), owned(&[("x-a", "1")]), 1));
}

#[test]
fn a_joined_table_becomes_exact_once_its_known_entries_fill_it() {
    let mut d = Decoder::joined();
    // A size update makes the bound known; 3 entries of 42 bytes fill 127 of 128.
    let mut block = vec![0x3f, 0x61];
    for name in [b"x-aaaaa", b"x-bbbbb", b"x-ccccc"] {
        block.extend_from_slice(&[0x40, 7]);
        block.extend_from_slice(name);
        block.extend_from_slice(&[3, b'v', b'a', b'l']);
    }
    let (r, got, unknown) = decode(&mut d, &block);
    assert_eq!((r, unknown, got.len()), (Ok(()), 0, 3));
    assert!(!d.table.has_unknown(), "no older entry can remain");
    let (r, _, _) = decode(&mut d, &[0xc1]);
    assert_eq!(r, Err(HpackError::Index));
}

#[test]
fn after_a_loss_the_announced_table_size_bounds_what_can_remain() {
    // The decoding side allowed 100 bytes (and never more since observer saw it): once 69
    // bytes of new entries are known, no entry from before the loss fits beside them.
    let mut d = Decoder::joined();
    d.announce(100);
    d.lose();
    assert!(d.table.has_unknown());
    let mut block = vec![0x40, 3];
    block.extend_from_slice(b"x-a");
    block.extend_from_slice(&[34]);
    block.extend_from_slice(&[b'v'; 34]);
    let (r, _, _) = decode(&mut d, &block);
    assert_eq!(r, Ok(()));
    assert!(!d.table.has_unknown());
    // Without an announced size the bound is not known: old entries may remain.
    let mut d = Decoder::joined();
    let (r, _, _) = decode(&mut d, &block);
    assert_eq!(r, Ok(()));
    assert!(d.table.has_unknown());
}

#[test]
fn a_table_larger_than_the_cap_turns_references_past_it_unknown() {
    let mut d = Decoder::fresh();
    let mut block = Vec::new();
    // Size update to MAX_TABLE * 2 (5-bit prefix integer).
    let n = MAX_TABLE * 2 - 31;
    block.push(0x3f);
    block.extend_from_slice(&[
        (n & 0x7f) as u8 | 0x80,
        ((n >> 7) & 0x7f) as u8 | 0x80,
        (n >> 14) as u8,
    ]);
    let mut list = HeaderList::default();
    let mut stats = BlockStats::default();
    assert_eq!(d.decode(&block, &mut list, &mut stats, &|_| true), Ok(()));
    assert_eq!(stats.capped, 1);
    let (r, _, unknown) = decode(&mut d, &[0xbe]);
    assert_eq!((r, unknown), (Ok(()), 1));
}

#[test]
fn malformed_blocks_are_errors_not_panics() {
    let cases: [(&[u8], HpackError); 6] = [
        (&[0x80], HpackError::Index),
        (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], HpackError::Integer),
        (&[0x7f], HpackError::Integer),
        (&[0x40, 0x05, b'a'], HpackError::String),
        // A Huffman string of all ones past 7 bits of padding (EOS).
        (
            &[0x40, 0x81, b'a', 0x84, 0xff, 0xff, 0xff, 0xff],
            HpackError::Huffman,
        ),
        (&[0x82, 0x20], HpackError::SizeUpdate),
    ];
    for (block, want) in cases {
        let mut d = Decoder::fresh();
        let (r, _, _) = decode(&mut d, block);
        assert_eq!(r, Err(want), "{block:02x?}");
    }
}

#[test]
fn the_decoded_list_is_capped() {
    let mut d = Decoder::fresh();
    let value = "v".repeat(3000);
    let mut block = vec![0x40, 3];
    block.extend_from_slice(b"x-a");
    block.extend_from_slice(&[
        0x7f,
        (3000 - 127) as u8 & 0x7f | 0x80,
        ((3000 - 127) >> 7) as u8,
    ]);
    block.extend_from_slice(value.as_bytes());
    // 3 KB referenced 50 times from a 50-byte tail.
    block.extend(std::iter::repeat_n(0xbe, 50));
    let mut list = HeaderList::default();
    let mut stats = BlockStats::default();
    assert_eq!(d.decode(&block, &mut list, &mut stats, &|_| true), Ok(()));
    assert!(list.capped);
    assert!(list.held_bytes() <= MAX_DECODED);
    assert_eq!(list.iter().count(), MAX_DECODED / (3 + 3000));
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        ":method",
        ":path",
        ":authority",
        "accept",
        "cookie",
        "x-request-id",
        "user-agent",
        "authorization",
        "content-type",
        "x-b3-traceid",
    ])
    .prop_map(str::to_string)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever an encoder indexes and Huffman-codes, and however it resizes, the decoder of
    /// a connection seen from its start decodes exactly; one that joined after the first
    /// blocks never invents a field: what it knows is what was sent, in order.
    #[test]
    fn decodes_like_the_encoder_and_a_late_joiner_invents_nothing(
        blocks in prop::collection::vec(
            (prop::option::of(0u32..600), prop::collection::vec((name(), "[ -~]{0,40}", any::<bool>()), 0..8)),
            1..12),
        join in 0usize..6,
        flush in any::<bool>(),
    ) {
        let mut enc = Enc::new();
        let mut exact = Decoder::fresh();
        let mut late = Decoder::joined();
        for (i, (resize, fields)) in blocks.iter().enumerate() {
            let mut block = resize.map(|n| enc.resize(n)).unwrap_or_default();
            if flush && i == join {
                // The encoder empties its table (size 0, then back): a decoder that joined
                // knows every entry from here on.
                block = [enc.resize(0), enc.resize(4096)].concat();
            }
            let mut sent = Vec::new();
            for (n, v, index) in fields {
                let flags = if *index {
                    httlib_hpack::Encoder::BEST_FORMAT
                        | httlib_hpack::Encoder::WITH_INDEXING
                        | httlib_hpack::Encoder::HUFFMAN_VALUE
                } else {
                    httlib_hpack::Encoder::BEST_FORMAT | httlib_hpack::Encoder::HUFFMAN_NAME
                };
                block.extend(enc.with_flags(&[(n.as_str(), v.as_str())], flags));
                sent.push((n.clone(), v.clone()));
            }
            let (r, got, unknown) = decode(&mut exact, &block);
            prop_assert_eq!(r, Ok(()));
            prop_assert_eq!(unknown, 0);
            prop_assert_eq!(&got, &sent);
            if i >= join {
                let (r, got, unknown) = decode(&mut late, &block);
                prop_assert_eq!(r, Ok(()));
                prop_assert_eq!(got.len() + unknown as usize, sent.len());
                if flush {
                    prop_assert_eq!(&got, &sent);
                    continue;
                }
                // What is known is a subsequence of what was sent.
                let mut it = sent.iter();
                for f in &got {
                    prop_assert!(it.any(|s| s == f), "invented {:?}", f);
                }
            }
        }
    }

    /// Arbitrary bytes: no panic, the table within its cap.
    #[test]
    fn garbage_blocks_are_bounded(blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..30)) {
        let mut d = Decoder::joined();
        let mut list = HeaderList::default();
        for b in blocks {
            let _ = d.decode(&b, &mut list, &mut BlockStats::default(), &|_| true);
            prop_assert!(d.held_bytes() <= MAX_TABLE);
            prop_assert!(list.held_bytes() <= MAX_DECODED);
        }
    }
}
