//! The age layer as `decrypting_reader` removes it, with a fixed test identity.
//!
//! The first input byte says how to use the rest. Bit 0 clear: the rest is the file, as
//! found on the medium. Bit 0 set: the rest describes a plaintext, which is encrypted to the
//! identity (header and payload as `airlock-pack` writes them) and then damaged as
//! described (flipped, cut, extended): this reaches the payload chunks, which random bytes
//! never do. An undamaged file must decrypt to its plaintext; a damaged one must be
//! refused, since anything else would be a forgery.

use std::io::{Cursor, Read, Write};
use std::sync::OnceLock;

use age_core::format::FileKey;
use airlock_bundle::agestream::{write_header, PayloadWriter};
use airlock_bundle::crypt::{decrypting_reader, Decryption, AGE_MAGIC};
use arbitrary::{Arbitrary, Unstructured};

/// A key for fuzzing only; seeds in `fuzz/seeds/agestream` are encrypted to it.
pub const IDENTITY: &str =
    "AGE-SECRET-KEY-1ER20N04PHGSW6WDNH5AGV7HG7EK2X2P35T8L9D5T9T6GJZ8YL7LQFHCPYQ";
pub const RECIPIENT: &str = "age1nxrjrrkanpk4stxafh3c24j9v25x27h78mwnfl2lq57vyjw6yapqytcyth";
/// Plaintext bytes per STREAM chunk (the age spec's).
const CHUNK: usize = 64 << 10;

pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let out = decrypt(rest.to_vec());
        if !rest.starts_with(AGE_MAGIC) {
            assert_eq!(out.as_deref(), Ok(rest), "a plain stream passes unchanged");
        }
        return;
    }
    let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let plaintext = case.plaintext();
    let original = encrypt(&plaintext, &case.pieces);
    let mut file = original.clone();
    for d in &case.damage {
        d.apply(&mut file);
    }
    if !file.starts_with(AGE_MAGIC) {
        // No longer an age file at all: read as a plain bundle, byte for byte.
        assert_eq!(decrypt(file.clone()).as_ref(), Ok(&file));
        return;
    }
    match decrypt(file.clone()) {
        Ok(out) => {
            assert!(
                file == original,
                "a damaged file decrypted to {} of {} bytes; damage {:?}",
                out.len(),
                plaintext.len(),
                case.damage
            );
            assert!(
                out == plaintext,
                "decrypted to other bytes than were encrypted"
            );
        }
        Err(e) => assert!(file != original, "an intact file was refused: {e}"),
    }
}

#[derive(Debug, Arbitrary)]
struct Case {
    bytes: Vec<u8>,
    /// Plaintext length: the bytes as given, or near a chunk boundary (repeating them).
    near_boundary: Option<(u8, i8)>,
    /// The sizes of the writes the plaintext is handed to the writer in.
    pieces: Vec<u16>,
    damage: Vec<Damage>,
}

impl Case {
    fn plaintext(&self) -> Vec<u8> {
        let Some((chunks, delta)) = self.near_boundary else {
            return self.bytes.clone();
        };
        let len = (usize::from(chunks % 3) * CHUNK).saturating_add_signed(isize::from(delta));
        let fill = if self.bytes.is_empty() {
            &[0u8][..]
        } else {
            &self.bytes
        };
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            v.extend_from_slice(&fill[..fill.len().min(len - v.len())]);
        }
        v
    }
}

#[derive(Debug, Arbitrary)]
enum Damage {
    Flip {
        at: u32,
        xor: u8,
    },
    Truncate {
        at: u32,
    },
    Append(Vec<u8>),
    Insert {
        at: u32,
        byte: u8,
    },
    Remove {
        at: u32,
    },
    /// Copies `len` bytes from `from` over `to` (a chunk moved or repeated).
    Copy {
        from: u32,
        to: u32,
        len: u16,
    },
}

impl Damage {
    fn apply(&self, f: &mut Vec<u8>) {
        let at = |i: u32, n: usize| i as usize % (n + 1);
        match *self {
            Damage::Flip { at: i, xor } => {
                if !f.is_empty() {
                    let i = i as usize % f.len();
                    f[i] ^= xor;
                }
            }
            Damage::Truncate { at: i } => f.truncate(at(i, f.len())),
            Damage::Append(ref b) => f.extend_from_slice(b),
            Damage::Insert { at: i, byte } => f.insert(at(i, f.len()), byte),
            Damage::Remove { at: i } => {
                if !f.is_empty() {
                    f.remove(i as usize % f.len());
                }
            }
            Damage::Copy { from, to, len } => {
                let from = at(from, f.len());
                let len = usize::from(len).min(f.len() - from);
                let piece = f[from..from + len].to_vec();
                let to = at(to, f.len());
                let end = (to + len).min(f.len());
                f[to..end].copy_from_slice(&piece[..end - to]);
            }
        }
    }
}

/// One age header and its file key for the whole run: wrapping a key for X25519 takes a
/// fresh ephemeral key every time, which would make runs irreproducible.
fn header() -> &'static (Vec<u8>, FileKey) {
    static HEADER: OnceLock<(Vec<u8>, FileKey)> = OnceLock::new();
    HEADER.get_or_init(|| {
        let r: age::x25519::Recipient = RECIPIENT.parse().unwrap();
        let mut out = Vec::new();
        let key = write_header(&mut out, &[&r as &dyn age::Recipient]).unwrap();
        (out, key)
    })
}

fn encrypt(plaintext: &[u8], pieces: &[u16]) -> Vec<u8> {
    let (head, key) = header();
    let mut w = PayloadWriter::new(head.clone(), key).unwrap();
    let mut rest = plaintext;
    let mut sizes = pieces.iter().map(|&p| usize::from(p).max(1)).cycle();
    while !rest.is_empty() {
        let n = if pieces.is_empty() {
            rest.len()
        } else {
            sizes.next().unwrap().min(rest.len())
        };
        w.write_all(&rest[..n]).unwrap();
        rest = &rest[n..];
    }
    w.finish().unwrap()
}

fn decrypt(file: Vec<u8>) -> Result<Vec<u8>, String> {
    static DECRYPTION: OnceLock<Decryption> = OnceLock::new();
    let dec = DECRYPTION.get_or_init(|| Decryption {
        identities: vec![Box::new(IDENTITY.parse::<age::x25519::Identity>().unwrap())],
        passphrase: None,
    });
    let (mut plain, _) = decrypting_reader(Cursor::new(file), dec).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    plain.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}
