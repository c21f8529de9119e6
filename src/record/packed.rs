//! How the state's two biggest kinds of record are stored: ticket records (with their
//! histories) and Message-ID index entries. Both are JSON, much of it the same field
//! names, event names and reasons in every record; compressed one by one with zstd
//! against a fixed vocabulary of them, a ticket takes about a sixth of its JSON and an
//! index entry about half. Every other record stays plain JSON.
//!
//! A packed value is [`VOCABULARY_1`] (one byte) followed by a zstd frame made with
//! `vocabulary-1.txt` as its dictionary. A value that begins with `{` is plain JSON, as
//! states written before were: both read, so a state is never rewritten for this, and a
//! record is packed the next time it is written.
//!
//! The vocabulary is part of the state format: a record packed with it can be read only
//! with the very same bytes, so the file never changes (a test holds its digest). A
//! better vocabulary would be a second file under a new first byte, the first kept.

use std::cell::RefCell;
use std::sync::LazyLock;

use serde::de::DeserializeOwned;
use serde::Serialize;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use super::{from_json, StoreError};

/// The first byte of a value packed against `vocabulary-1.txt`.
const VOCABULARY_1: u8 = 1;
pub(super) const VOCABULARY_1_TEXT: &[u8] = include_bytes!("vocabulary-1.txt");
/// zstd's level: 3 packs a ticket in about 10 µs; higher levels gain a few percent
/// for several times the time on the path of every message.
const LEVEL: i32 = 3;
/// No record the daemon writes comes near this; a frame that says it holds more is
/// damaged, and is refused rather than allocated.
const MAX_UNPACKED: u64 = 64 << 20;

static ENCODER: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(VOCABULARY_1_TEXT, LEVEL));
static DECODER: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(VOCABULARY_1_TEXT));

thread_local! {
    // One context per thread: making one costs more than packing a ticket.
    static PACKER: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static UNPACKER: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `v` as the state stores it: its JSON, packed.
pub(super) fn pack<T: Serialize>(v: &T) -> Vec<u8> {
    let json = serde_json::to_vec(v).expect("state records serialise");
    let frame = PACKER.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            *p = Some(Compressor::with_prepared_dictionary(&ENCODER).expect("zstd context"));
        }
        p.as_mut().expect("made above").compress(&json)
    });
    match frame {
        Ok(frame) => {
            let mut out = Vec::with_capacity(frame.len() + 1);
            out.push(VOCABULARY_1);
            out.extend_from_slice(&frame);
            out
        }
        // zstd fails only without memory for its context; the plain JSON reads as well.
        Err(_) => json,
    }
}

/// A record written by [`pack`], or plain JSON; `what` names it in the error.
pub(super) fn unpack<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, StoreError> {
    match b.first() {
        Some(&VOCABULARY_1) => {
            let json = unpack_frame(&b[1..]).map_err(|err| StoreError::Corrupt {
                what: what.to_string(),
                err,
            })?;
            from_json(what, &json)
        }
        _ => from_json(what, b),
    }
}

/// [`unpack`], with any damage as `None` (for the sweep's checks, which leave what they
/// cannot read).
pub(super) fn unpack_ok<T: DeserializeOwned>(b: &[u8]) -> Option<T> {
    unpack("record", b).ok()
}

fn unpack_frame(frame: &[u8]) -> Result<Vec<u8>, String> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n <= MAX_UNPACKED => n as usize,
        Ok(Some(n)) => return Err(format!("a packed record says it holds {n} bytes")),
        Ok(None) | Err(_) => return Err("a packed record without its size".into()),
    };
    UNPACKER.with(|u| {
        let mut u = u.borrow_mut();
        if u.is_none() {
            *u = Some(Decompressor::with_prepared_dictionary(&DECODER).map_err(|e| e.to_string())?);
        }
        u.as_mut()
            .expect("made above")
            .decompress(frame, size)
            .map_err(|e| format!("a packed record does not unpack: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        ticket: Option<String>,
        mailbox: String,
        at: String,
    }

    fn rec() -> Rec {
        Rec {
            ticket: Some("T-1001".into()),
            mailbox: "support".into(),
            at: "2026-03-02T09:15:00.000000000Z".into(),
        }
    }

    #[test]
    fn a_packed_record_reads_back_as_written_and_is_smaller() {
        let packed = pack(&rec());
        assert_eq!(packed[0], VOCABULARY_1);
        assert!(packed.len() < serde_json::to_vec(&rec()).unwrap().len());
        assert_eq!(unpack::<Rec>("rec", &packed).unwrap(), rec());
    }

    #[test]
    fn a_plain_json_record_of_an_earlier_state_still_reads() {
        let plain = serde_json::to_vec(&rec()).unwrap();
        assert_eq!(unpack::<Rec>("rec", &plain).unwrap(), rec());
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_it_not_a_panic_or_an_allocation() {
        let mut packed = pack(&rec());
        let n = packed.len();
        packed.truncate(n - 3);
        let e = unpack::<Rec>("message record", &packed).unwrap_err();
        assert!(e.to_string().contains("message record"), "{e}");
        // A frame header claiming 1 TB is refused before anything is allocated.
        let mut huge = vec![VOCABULARY_1];
        huge.extend_from_slice(&[0x28, 0xB5, 0x2F, 0xFD, 0xE0]);
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let e = unpack::<Rec>("ticket", &huge).unwrap_err();
        assert!(e.to_string().contains("ticket"), "{e}");
        assert!(unpack_ok::<Rec>(&huge).is_none());
    }

    #[test]
    fn the_vocabulary_never_changes_since_stored_records_need_it_byte_for_byte() {
        let digest = Sha256::digest(VOCABULARY_1_TEXT);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex, "45f353958d4e420064a9f63fae1169ecc4547b8acd83badb629595d3b2c224a9",
            "vocabulary-1.txt changed: records packed with it no longer read; add a new vocabulary instead");
    }
}
