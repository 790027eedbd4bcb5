//! Reading age v1 files (<https://age-encryption.org/v1>) with the payload decrypted by
//! `ring`'s ChaCha20-Poly1305, which runs about twice as fast as the portable one the `age`
//! crate uses and is the bottleneck of `verify` and `load` on encrypted bundles.
//!
//! Only the framing lives here: the header's lines, its MAC, the payload key and the STREAM
//! chunks. Unwrapping the file key from a recipient stanza (X25519, ssh, scrypt) stays with
//! the `age` crate's identities. Writing stays with the `age` crate entirely.

use std::io::{self, BufRead, Read};

use age::secrecy::ExposeSecret as _;
use age_core::format::{FileKey, Stanza};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::{hkdf, hmac};

use crate::BundleError;

const VERSION_LINE: &[u8] = b"age-encryption.org/v1\n";
const MAC_PREFIX: &[u8] = b"--- ";
/// Plaintext bytes per STREAM chunk, and the tag each chunk carries.
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// Bounds on a header read before anything in it is authenticated.
const MAX_HEADER_BYTES: usize = 1 << 20;
const SCRYPT_TAG: &str = "scrypt";

fn invalid(m: impl Into<String>) -> BundleError {
    BundleError::Decrypt(format!("invalid age header: {}", m.into()))
}

/// An age header: its stanzas, and what its MAC covers.
#[derive(Debug)]
pub struct AgeHeader {
    stanzas: Vec<Stanza>,
    /// Everything from the version line up to and including `---`.
    authenticated: Vec<u8>,
    mac: [u8; 32],
}

impl AgeHeader {
    /// Reads the header, leaving `r` at the payload nonce.
    pub fn read(r: &mut impl BufRead) -> Result<AgeHeader, BundleError> {
        let mut text = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = r
                .by_ref()
                .take((MAX_HEADER_BYTES - text.len()) as u64)
                .read_until(b'\n', &mut line)
                .map_err(|e| invalid(e.to_string()))?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Err(invalid(
                    "ends before its MAC line (or is larger than 1 MiB)",
                ));
            }
            if text.is_empty() && line != VERSION_LINE {
                return Err(invalid("not an age v1 file"));
            }
            if line.starts_with(MAC_PREFIX) {
                break;
            }
            text.extend_from_slice(&line);
        }
        let mut authenticated = text;
        let body_start = VERSION_LINE.len();
        let mut rest = &authenticated[body_start..];
        let mut stanzas = Vec::new();
        while !rest.is_empty() {
            let (next, stanza) = age_core::format::read::age_stanza(rest)
                .map_err(|_| invalid("malformed recipient stanza"))?;
            stanzas.push(Stanza::from(stanza));
            rest = next;
        }
        if stanzas.is_empty() {
            return Err(invalid("no recipient stanzas"));
        }
        if stanzas.iter().any(|s| s.tag == SCRYPT_TAG) && stanzas.len() != 1 {
            return Err(invalid("an scrypt stanza must be the only one"));
        }
        let encoded = line[MAC_PREFIX.len()..line.len() - 1].to_vec();
        let mac = decode_mac(&encoded).ok_or_else(|| invalid("malformed MAC"))?;
        authenticated.extend_from_slice(b"---");
        Ok(AgeHeader {
            stanzas,
            authenticated,
            mac,
        })
    }

    /// Encrypted to a passphrase (an scrypt stanza) rather than to recipients.
    pub fn is_scrypt(&self) -> bool {
        self.stanzas.iter().any(|s| s.tag == SCRYPT_TAG)
    }

    /// The file key, from the first identity that can unwrap a stanza, with the header MAC
    /// checked under it.
    pub fn unwrap(&self, identities: &[&dyn age::Identity]) -> Result<FileKey, BundleError> {
        for id in identities {
            match id.unwrap_stanzas(&self.stanzas) {
                Some(Ok(key)) => {
                    self.check_mac(&key)?;
                    return Ok(key);
                }
                Some(Err(e)) => return Err(BundleError::Decrypt(e.to_string())),
                None => {}
            }
        }
        Err(BundleError::Decrypt(
            "none of the given identities can decrypt it (wrong --identity?)".into(),
        ))
    }

    fn check_mac(&self, key: &FileKey) -> Result<(), BundleError> {
        let mac_key = derive(&[], key.expose_secret(), b"header");
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, &mac_key),
            &self.authenticated,
            &self.mac,
        )
        .map_err(|_| invalid("its MAC does not verify (tampered or corrupt)"))
    }
}

/// Canonical unpadded base64 of exactly 32 bytes.
fn decode_mac(encoded: &[u8]) -> Option<[u8; 32]> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let bytes = engine.decode(encoded).ok()?;
    // Re-encoding must give the same text: no alternative encodings of one MAC.
    if engine.encode(&bytes).as_bytes() != encoded {
        return None;
    }
    bytes.try_into().ok()
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256 with a 32-byte output.
fn derive(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&[info], Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The decrypted payload, one STREAM chunk at a time.
pub struct PayloadReader<R> {
    inner: R,
    key: LessSafeKey,
    counter: u128,
    chunk: Vec<u8>,
    pos: usize,
    end: usize,
    done: bool,
}

impl<R> std::fmt::Debug for PayloadReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PayloadReader(chunk {})", self.counter)
    }
}

fn corrupt(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

impl<R: BufRead> PayloadReader<R> {
    /// Reads the payload nonce and derives the payload key.
    pub fn new(mut inner: R, file_key: &FileKey) -> Result<PayloadReader<R>, BundleError> {
        let mut nonce = [0u8; 16];
        inner
            .read_exact(&mut nonce)
            .map_err(|_| BundleError::Decrypt("the age payload is missing".into()))?;
        let key = derive(&nonce, file_key.expose_secret(), b"payload");
        let key = LessSafeKey::new(
            UnboundKey::new(&aead::CHACHA20_POLY1305, &key).expect("32-byte ChaCha20 key"),
        );
        Ok(PayloadReader {
            inner,
            key,
            counter: 0,
            chunk: vec![0u8; CHUNK + TAG],
            pos: 0,
            end: 0,
            done: false,
        })
    }

    /// Decrypts the next chunk into `self.chunk[..self.end]`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let mut n = 0;
        while n < self.chunk.len() {
            let got = self.inner.read(&mut self.chunk[n..])?;
            if got == 0 {
                break;
            }
            n += got;
        }
        // The last chunk is the one the file ends with; it may be full.
        let last = n < self.chunk.len() || self.inner.fill_buf()?.is_empty();
        if n < TAG {
            return Err(corrupt(format!(
                "age payload truncated in chunk {}",
                self.counter
            )));
        }
        if self.counter >= 1 << 88 {
            return Err(corrupt("age payload has too many chunks".into()));
        }
        let mut nonce = [0u8; 12];
        nonce[..11].copy_from_slice(&self.counter.to_be_bytes()[5..]);
        nonce[11] = u8::from(last);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut self.chunk[..n],
            )
            .map_err(|_| {
                corrupt(format!(
                    "age payload chunk {} does not authenticate (corrupt or truncated)",
                    self.counter
                ))
            })?;
        if last && plain.is_empty() && self.counter > 0 {
            return Err(corrupt("age payload ends with an empty chunk".into()));
        }
        self.end = plain.len();
        self.pos = 0;
        self.counter += 1;
        self.done = last;
        Ok(())
    }
}

impl<R: BufRead> Read for PayloadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.end {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = (self.end - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn encrypt(data: &[u8], to: &age::x25519::Identity) -> Vec<u8> {
        let r = to.to_public();
        let enc =
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap();
        out
    }

    fn decrypt(file: &[u8], id: &age::x25519::Identity) -> Result<Vec<u8>, String> {
        let mut r = io::BufReader::new(file);
        let h = AgeHeader::read(&mut r).map_err(|e| e.to_string())?;
        let key = h
            .unwrap(&[id as &dyn age::Identity])
            .map_err(|e| e.to_string())?;
        let mut p = PayloadReader::new(r, &key).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        p.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn reads_what_the_age_crate_writes_at_every_chunk_boundary() {
        let id = age::x25519::Identity::generate();
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 77] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let file = encrypt(&data, &id);
            assert_eq!(decrypt(&file, &id).unwrap(), data, "size {size}");
        }
    }

    #[test]
    fn passphrases_go_through_scrypt() {
        let pass = age::secrecy::SecretString::from("correct horse".to_string());
        let mut r = age::scrypt::Recipient::new(pass.clone());
        r.set_work_factor(10);
        let enc =
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
        let mut file = Vec::new();
        let mut w = enc.wrap_output(&mut file).unwrap();
        w.write_all(b"secret payload").unwrap();
        w.finish().unwrap();
        let mut rd = io::BufReader::new(&file[..]);
        let h = AgeHeader::read(&mut rd).unwrap();
        assert!(h.is_scrypt());
        let id = age::scrypt::Identity::new(pass);
        let key = h.unwrap(&[&id as &dyn age::Identity]).unwrap();
        let mut out = Vec::new();
        PayloadReader::new(rd, &key)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"secret payload");
        let wrong = age::scrypt::Identity::new("wrong".to_string().into());
        let mut rd = io::BufReader::new(&file[..]);
        let h = AgeHeader::read(&mut rd).unwrap();
        assert!(h.unwrap(&[&wrong as &dyn age::Identity]).is_err());
    }

    #[test]
    fn tampering_truncation_and_wrong_keys_are_refused() {
        let id = age::x25519::Identity::generate();
        let data: Vec<u8> = (0..(2 * CHUNK + 500)).map(|i| (i % 13) as u8).collect();
        let file = encrypt(&data, &id);
        let header_len = file
            .windows(4)
            .position(|w| w == b"\n---")
            .map(|p| p + 1 + file[p + 1..].iter().position(|&b| b == b'\n').unwrap() + 1)
            .unwrap();
        let payload = header_len + 16;
        let other = age::x25519::Identity::generate();
        assert!(decrypt(&file, &other)
            .unwrap_err()
            .contains("none of the given"));
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut f = file.clone();
        f[header_len - 10] ^= 1; // inside the MAC
        cases.push(("mac", f));
        let mut f = file.clone();
        f[30] ^= 1; // inside the stanza
        cases.push(("stanza", f));
        let mut f = file.clone();
        f[payload + CHUNK + 100] ^= 1;
        cases.push(("second chunk", f));
        // Cut exactly at a chunk boundary: the earlier chunk was not sealed as the last.
        cases.push(("cut at a boundary", file[..payload + CHUNK + TAG].to_vec()));
        cases.push(("cut mid-chunk", file[..file.len() - 100].to_vec()));
        let mut f = file.clone();
        f.push(0);
        cases.push(("a byte appended", f));
        let mut f = file.clone();
        f.extend_from_slice(&file[payload..payload + CHUNK + TAG]);
        cases.push(("a chunk appended", f));
        cases.push(("no payload", file[..header_len].to_vec()));
        cases.push(("not age", b"age-encryption.org/v2\n".to_vec()));
        for (what, f) in cases {
            assert!(decrypt(&f, &id).is_err(), "{what} was accepted");
        }
    }
}
