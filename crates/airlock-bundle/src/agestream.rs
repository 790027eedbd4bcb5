//! Reading and writing age v1 files (<https://age-encryption.org/v1>) with the payload
//! en- and decrypted by `ring`'s ChaCha20-Poly1305, which runs several times as fast as the
//! portable one the `age` crate uses and was the bottleneck of encrypted builds, `verify`
//! and `load`.
//!
//! Only the framing lives here: the header's lines, its MAC, the payload key and the STREAM
//! chunks. Wrapping the file key for a recipient and unwrapping it from a stanza (X25519,
//! ssh, scrypt) stay with the `age` crate's recipients and identities.

use std::collections::HashSet;
use std::io::{self, BufRead, Read, Write};

use age::secrecy::ExposeSecret as _;
use age_core::format::{FileKey, Stanza};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
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

/// Writes an age v1 header for `recipients` (with a fresh file key) and returns the file
/// key. Recipients must agree on their labels, as the `age` crate requires (an scrypt
/// passphrase, for instance, must be alone).
pub fn write_header(
    out: &mut impl Write,
    recipients: &[&dyn age::Recipient],
) -> Result<FileKey, BundleError> {
    let rng = SystemRandom::new();
    let file_key = FileKey::try_init_with_mut(|k| rng.fill(k))
        .map_err(|_| BundleError::Usage("no randomness for the file key".into()))?;
    let mut labels: Option<HashSet<String>> = None;
    let mut header = VERSION_LINE.to_vec();
    for r in recipients {
        let (stanzas, l) = r
            .wrap_file_key(&file_key)
            .map_err(|e| BundleError::Usage(format!("cannot encrypt to this recipient: {e}")))?;
        match &labels {
            Some(prev) if *prev != l => {
                return Err(BundleError::Usage(
                    "these recipients cannot be combined (a passphrase must be used alone)".into(),
                ))
            }
            _ => labels = Some(l),
        }
        for st in stanzas {
            write_stanza(&mut header, &st);
        }
    }
    if labels.is_none() {
        return Err(BundleError::Usage("no recipients to encrypt to".into()));
    }
    header.extend_from_slice(b"---");
    let mac_key = derive(&[], file_key.expose_secret(), b"header");
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &mac_key), &header);
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(mac.as_ref());
    header.push(b' ');
    header.extend_from_slice(encoded.as_bytes());
    header.push(b'\n');
    out.write_all(&header).map_err(|e| BundleError::Output {
        entry: "age header".into(),
        source: e,
    })?;
    Ok(file_key)
}

/// `-> tag args…` and the body in base64 lines of 64 columns, the last one short (empty if
/// need be), as the spec requires.
fn write_stanza(out: &mut Vec<u8>, st: &Stanza) {
    use base64::Engine as _;
    out.extend_from_slice(b"-> ");
    out.extend_from_slice(st.tag.as_bytes());
    for a in &st.args {
        out.push(b' ');
        out.extend_from_slice(a.as_bytes());
    }
    out.push(b'\n');
    let body = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&st.body);
    let mut rest = body.as_bytes();
    while rest.len() >= 64 {
        out.extend_from_slice(&rest[..64]);
        out.push(b'\n');
        rest = &rest[64..];
    }
    out.extend_from_slice(rest);
    out.push(b'\n');
}

/// The encrypted payload: a random nonce, then STREAM chunks of 64 KiB, the last one
/// flagged. A full chunk is held back until more data shows it is not the last.
pub struct PayloadWriter<W: Write> {
    inner: W,
    key: LessSafeKey,
    counter: u128,
    chunk: Vec<u8>,
    len: usize,
}

impl<W: Write> std::fmt::Debug for PayloadWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PayloadWriter(chunk {})", self.counter)
    }
}

impl<W: Write> PayloadWriter<W> {
    /// Writes the payload nonce and derives the payload key.
    pub fn new(mut inner: W, file_key: &FileKey) -> io::Result<PayloadWriter<W>> {
        let mut nonce = [0u8; 16];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| io::Error::other("no randomness for the payload nonce"))?;
        inner.write_all(&nonce)?;
        let key = derive(&nonce, file_key.expose_secret(), b"payload");
        Ok(PayloadWriter {
            inner,
            key: LessSafeKey::new(
                UnboundKey::new(&aead::CHACHA20_POLY1305, &key).expect("32-byte ChaCha20 key"),
            ),
            counter: 0,
            chunk: vec![0u8; CHUNK + TAG],
            len: 0,
        })
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        if self.counter >= 1 << 88 {
            return Err(io::Error::other("age payload has too many chunks"));
        }
        let mut nonce = [0u8; 12];
        nonce[..11].copy_from_slice(&self.counter.to_be_bytes()[5..]);
        nonce[11] = u8::from(last);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut self.chunk[..self.len],
            )
            .map_err(|_| io::Error::other("ChaCha20-Poly1305 failed"))?;
        self.chunk[self.len..self.len + TAG].copy_from_slice(tag.as_ref());
        self.inner.write_all(&self.chunk[..self.len + TAG])?;
        self.counter += 1;
        self.len = 0;
        Ok(())
    }

    /// Seals the last chunk (possibly empty, for an empty payload) and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for PayloadWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.len == CHUNK {
            self.seal(false)?;
        }
        let n = buf.len().min(CHUNK - self.len);
        self.chunk[self.len..self.len + n].copy_from_slice(&buf[..n]);
        self.len += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Plaintext bytes per STREAM chunk, the size of a sealed chunk on disk, and of the payload
/// nonce that precedes the first chunk: what random access into a payload needs.
pub const PLAIN_CHUNK: u64 = CHUNK as u64;
pub const SEALED_CHUNK: u64 = (CHUNK + TAG) as u64;
pub const PAYLOAD_NONCE: u64 = 16;

/// Random access into a payload whose file key is known (the packing side's own bundles,
/// which its blob cache reads back on a warm rebuild): chunk `i` is sealed under the
/// counter `i`, so any chunk decrypts on its own. Every chunk still authenticates; a chunk
/// that does not (a flipped byte, a torn write) is an error, never plaintext.
pub struct PayloadKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for PayloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayloadKey")
    }
}

impl PayloadKey {
    /// The payload key of a file whose file key is `file_key` and whose payload starts
    /// with `nonce`.
    pub fn new(file_key: &[u8; 16], nonce: &[u8; 16]) -> PayloadKey {
        let key = derive(nonce, file_key, b"payload");
        PayloadKey {
            key: LessSafeKey::new(
                UnboundKey::new(&aead::CHACHA20_POLY1305, &key).expect("32-byte ChaCha20 key"),
            ),
        }
    }

    /// Decrypts sealed chunk `index` in place as the last chunk or not (`last`), and returns
    /// its plaintext length; `None` if it does not authenticate that way, with `sealed`
    /// scrambled. For a reader that can read the chunk again: it saves [`Self::open_chunk`]'s
    /// copy of every chunk, which cost a warm rebuild more than the decryption.
    pub fn open_chunk_as(&self, index: u64, sealed: &mut [u8], last: bool) -> Option<usize> {
        if sealed.len() < TAG || sealed.len() > CHUNK + TAG {
            return None;
        }
        let mut nonce = [0u8; 12];
        nonce[..11].copy_from_slice(&u128::from(index).to_be_bytes()[5..]);
        nonce[11] = u8::from(last);
        self.key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), sealed)
            .ok()
            .map(|plain| plain.len())
    }

    /// Decrypts sealed chunk `index` in place and returns its plaintext length. Whether it
    /// is the last chunk is not known to a reader that jumped to it, so both flags are
    /// tried (only one can authenticate).
    pub fn open_chunk(&self, index: u64, sealed: &mut [u8]) -> io::Result<usize> {
        if sealed.len() < TAG || sealed.len() > CHUNK + TAG {
            return Err(corrupt(format!("age payload chunk {index} has a bad size")));
        }
        let mut nonce = [0u8; 12];
        nonce[..11].copy_from_slice(&u128::from(index).to_be_bytes()[5..]);
        // A short chunk must be the last; a full one almost never is. The first guess runs
        // on a copy, since a failed open leaves its buffer scrambled.
        let guess = sealed.len() < CHUNK + TAG;
        let mut copy = sealed.to_vec();
        nonce[11] = u8::from(guess);
        if let Ok(plain) =
            self.key
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut copy)
        {
            let n = plain.len();
            sealed[..n].copy_from_slice(&copy[..n]);
            return Ok(n);
        }
        nonce[11] = u8::from(!guess);
        if let Ok(plain) =
            self.key
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), sealed)
        {
            return Ok(plain.len());
        }
        Err(corrupt(format!(
            "age payload chunk {index} does not authenticate (corrupt or truncated)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_key_opens_any_chunk_of_a_written_payload() {
        let file_key = [7u8; 16];
        let fk = FileKey::new(Box::new(file_key));
        let plain: Vec<u8> = (0..(CHUNK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        let mut w = PayloadWriter::new(Vec::new(), &fk).unwrap();
        w.write_all(&plain).unwrap();
        let out = w.finish().unwrap();
        let nonce: [u8; 16] = out[..16].try_into().unwrap();
        let key = PayloadKey::new(&file_key, &nonce);
        let sealed = &out[16..];
        for i in 0..3usize {
            let start = i * (CHUNK + TAG);
            let end = (start + CHUNK + TAG).min(sealed.len());
            let mut buf = sealed[start..end].to_vec();
            let n = key.open_chunk(i as u64, &mut buf).unwrap();
            let want = &plain[i * CHUNK..((i + 1) * CHUNK).min(plain.len())];
            assert_eq!(&buf[..n], want, "chunk {i}");
        }
        let mut flipped = sealed[..CHUNK + TAG].to_vec();
        flipped[5] ^= 1;
        let e = key.open_chunk(0, &mut flipped).unwrap_err();
        assert!(e.to_string().contains("does not authenticate"), "{e}");
        // A chunk read under another index does not authenticate either.
        let mut moved = sealed[..CHUNK + TAG].to_vec();
        assert!(key.open_chunk(1, &mut moved).is_err());
    }

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

    /// What this module writes, written in pieces of every awkward size.
    fn encrypt_ours(data: &[u8], to: &[&dyn age::Recipient]) -> Vec<u8> {
        let mut out = Vec::new();
        let key = write_header(&mut out, to).unwrap();
        let mut w = PayloadWriter::new(out, &key).unwrap();
        for piece in data.chunks(CHUNK / 3 + 1) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    /// The `age` crate (the reference implementation's rules) reads what this module writes,
    /// at every chunk boundary, and so does this module's reader.
    #[test]
    fn the_age_crate_reads_what_we_write_at_every_chunk_boundary() {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 77] {
            let data: Vec<u8> = (0..size).map(|i| (i * 11 % 253) as u8).collect();
            let file = encrypt_ours(&data, &[&r]);
            let dec = age::Decryptor::new_buffered(&file[..]).unwrap();
            let mut out = Vec::new();
            dec.decrypt(std::iter::once(&id as &dyn age::Identity))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "age crate, size {size}");
            assert_eq!(decrypt(&file, &id).unwrap(), data, "ours, size {size}");
            // Two recipients: either identity opens it.
            let other = age::x25519::Identity::generate();
            let file = encrypt_ours(&data, &[&other.to_public(), &r]);
            assert_eq!(decrypt(&file, &id).unwrap(), data);
            assert_eq!(decrypt(&file, &other).unwrap(), data);
        }
    }

    #[test]
    fn a_passphrase_we_write_is_alone_and_the_age_crate_reads_it() {
        let pass = age::secrecy::SecretString::from("correct horse".to_string());
        let mut r = age::scrypt::Recipient::new(pass.clone());
        r.set_work_factor(10);
        let file = encrypt_ours(b"secret payload", &[&r]);
        let dec = age::Decryptor::new_buffered(&file[..]).unwrap();
        let mut out = Vec::new();
        dec.decrypt(std::iter::once(
            &age::scrypt::Identity::new(pass) as &dyn age::Identity
        ))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
        assert_eq!(out, b"secret payload");
        let x = age::x25519::Identity::generate().to_public();
        let mut sink = Vec::new();
        assert!(
            write_header(&mut sink, &[&r, &x]).is_err(),
            "scrypt must be alone"
        );
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
