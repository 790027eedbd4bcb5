//! age encryption of the bundle stream: recipients for the packing side, identities and
//! passphrases for the unpacking side, and detection of plain (unencrypted) bundles.
//! The `age` crate's recipients wrap the file key and its identities unwrap it;
//! [`crate::agestream`] does the framing and the payload both ways.
//!
//! Secrets held here are wiped when dropped: passphrases are `SecretString`s, identity file
//! bytes and identity file text are [`Zeroizing`] buffers.

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::Path;

use age::secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use crate::agestream::{write_header, AgeHeader, PayloadReader, PayloadWriter};
use crate::BundleError;

/// Every age file starts with this line.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Who a bundle is encrypted to.
pub enum Encryption {
    None,
    Recipients(Vec<Box<dyn age::Recipient + Send>>),
    Passphrase(SecretString),
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encryption::None => write!(f, "Encryption::None"),
            Encryption::Recipients(r) => write!(f, "Encryption::Recipients({})", r.len()),
            Encryption::Passphrase(_) => write!(f, "Encryption::Passphrase"),
        }
    }
}

/// Parses one recipient: `age1…` (X25519) or an OpenSSH public key line (`ssh-ed25519 …`).
pub fn parse_recipient(s: &str) -> Result<Box<dyn age::Recipient + Send>, BundleError> {
    let s = s.trim();
    if s.starts_with("age1") {
        return s
            .parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| BundleError::Usage(format!("invalid age recipient {s:?}: {e}")));
    }
    if s.starts_with("ssh-") {
        return s
            .parse::<age::ssh::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| BundleError::Usage(format!("invalid ssh recipient {s:?}: {e:?}")));
    }
    Err(BundleError::Usage(format!(
        "unrecognised recipient {s:?}: expected age1… or ssh-ed25519 …"
    )))
}

/// Reads a recipients file: one recipient per line, `#` comments and blank lines ignored.
pub fn read_recipients_file(
    path: &Path,
) -> Result<Vec<Box<dyn age::Recipient + Send>>, BundleError> {
    let text = fs::read_to_string(path).map_err(|e| BundleError::io(path, e))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            parse_recipient(l).map_err(|e| BundleError::Usage(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// Wraps `out` so that what is written is encrypted as configured. The returned writer must
/// be finished with [`EncWriter::finish`].
pub fn encrypting_writer<W: Write + 'static>(
    out: W,
    enc: &Encryption,
) -> Result<EncWriter<W>, BundleError> {
    encrypting_writer_keyed(out, enc).map(|(w, _)| w)
}

/// What random access into an encrypted bundle of one's own needs
/// ([`crate::agestream::PayloadKey`]): the file key, and where the payload (its nonce)
/// starts in the file. Secret: whoever holds it reads the bundle.
pub struct OwnKey {
    pub file_key: Zeroizing<[u8; 16]>,
    pub payload_start: u64,
}

impl std::fmt::Debug for OwnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnKey(payload at {})", self.payload_start)
    }
}

/// [`encrypting_writer`], also returning the file key (`None` for a plain bundle), for the
/// packing side's blob cache to read its own bundle back.
pub fn encrypting_writer_keyed<W: Write + 'static>(
    mut out: W,
    enc: &Encryption,
) -> Result<(EncWriter<W>, Option<OwnKey>), BundleError> {
    let mut header = Vec::new();
    let file_key = match enc {
        Encryption::None => return Ok((EncWriter::Plain(out), None)),
        Encryption::Recipients(rs) => write_header(
            &mut header,
            &rs.iter()
                .map(|r| r.as_ref() as &dyn age::Recipient)
                .collect::<Vec<_>>(),
        )?,
        Encryption::Passphrase(p) => {
            let r = age::scrypt::Recipient::new(p.clone());
            write_header(&mut header, &[&r as &dyn age::Recipient])?
        }
    };
    let output = |source| BundleError::Output {
        entry: "age header".into(),
        source,
    };
    out.write_all(&header).map_err(output)?;
    let own = OwnKey {
        file_key: Zeroizing::new(*file_key.expose_secret()),
        payload_start: header.len() as u64,
    };
    let w = PayloadWriter::new(out, &file_key).map_err(output)?;
    Ok((EncWriter::Age(Box::new(w)), Some(own)))
}

/// Either a plain or an age-encrypting writer.
pub enum EncWriter<W: Write> {
    Plain(W),
    Age(Box<PayloadWriter<W>>),
}

impl<W: Write> std::fmt::Debug for EncWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncWriter::Plain(_) => "EncWriter::Plain",
            EncWriter::Age(_) => "EncWriter::Age",
        })
    }
}

impl<W: Write> Write for EncWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            EncWriter::Plain(w) => w.write(buf),
            EncWriter::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            EncWriter::Plain(w) => w.flush(),
            EncWriter::Age(w) => w.flush(),
        }
    }
}

impl<W: Write> EncWriter<W> {
    /// Writes the final age chunk (without it the file is truncated) and returns the sink.
    pub fn finish(self) -> io::Result<W> {
        match self {
            EncWriter::Plain(w) => Ok(w),
            EncWriter::Age(w) => w.finish(),
        }
    }
}

/// How the reading side may decrypt.
#[derive(Default)]
pub struct Decryption {
    pub identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Asked only when the bundle turns out to be passphrase-encrypted.
    pub passphrase: Option<Box<dyn Fn() -> Option<SecretString> + Send + Sync>>,
}

impl std::fmt::Debug for Decryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decryption({} identities)", self.identities.len())
    }
}

impl Decryption {
    /// Loads an identity file: age identities (`AGE-SECRET-KEY-1…`, as `age-keygen` and
    /// `airlock-unpack keygen` write) or an unencrypted OpenSSH private key.
    pub fn add_identity_file(&mut self, path: &Path) -> Result<(), BundleError> {
        let text = Zeroizing::new(fs::read(path).map_err(|e| BundleError::io(path, e))?);
        let key_err = |detail: String| BundleError::Key {
            path: path.to_path_buf(),
            detail,
        };
        if text.starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----") {
            let id = age::ssh::Identity::from_buffer(&text[..], Some(path.display().to_string()))
                .map_err(|e| key_err(e.to_string()))?;
            self.identities
                .push(Box::new(id.with_callbacks(age::NoCallbacks)));
            return Ok(());
        }
        let file = age::IdentityFile::from_buffer(&text[..]).map_err(|e| key_err(e.to_string()))?;
        let ids = file.into_identities().map_err(|e| key_err(e.to_string()))?;
        if ids.is_empty() {
            return Err(key_err("no identities in file".into()));
        }
        self.identities.extend(ids);
        Ok(())
    }
}

/// A bundle stream after the age layer (if any) has been removed.
pub type PlainStream = Box<dyn BufRead + Send>;

/// Opens `input` for reading plaintext: detects age by its magic line.
pub fn decrypting_reader<R: BufRead + Send + 'static>(
    mut input: R,
    dec: &Decryption,
) -> Result<(PlainStream, bool), BundleError> {
    let head = input.fill_buf().map_err(|e| BundleError::Read {
        entry: "bundle".into(),
        source: e,
    })?;
    if !head.starts_with(AGE_MAGIC) {
        return Ok((Box::new(input), false));
    }
    let header = AgeHeader::read(&mut input)?;
    let key = if header.is_scrypt() {
        let pass = dec.passphrase.as_ref().and_then(|f| f()).ok_or_else(|| {
            BundleError::Decrypt("the bundle is passphrase-encrypted; no passphrase given".into())
        })?;
        let id = age::scrypt::Identity::new(pass);
        header.unwrap(&[&id as &dyn age::Identity])?
    } else {
        if dec.identities.is_empty() {
            return Err(BundleError::Decrypt(
                "the bundle is encrypted; pass --identity FILE or set AIRLOCK_IDENTITY".into(),
            ));
        }
        let ids: Vec<&dyn age::Identity> = dec
            .identities
            .iter()
            .map(|i| i.as_ref() as &dyn age::Identity)
            .collect();
        header.unwrap(&ids)?
    };
    let reader = PayloadReader::new(input, &key)?;
    // Decryption gets a thread of its own, so that the reader's hashing runs beside it.
    Ok((
        Box::new(crate::readahead::ReadAhead::spawn(reader, 1 << 20, 4)),
        true,
    ))
}

/// A fresh X25519 identity: (secret key line, recipient).
pub fn generate_identity() -> (SecretString, String) {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    (id.to_string(), recipient)
}

/// The identity file text `age-keygen` would write (it holds the secret key: wiped when
/// dropped).
pub fn identity_file_text(
    secret: &SecretString,
    recipient: &str,
    created: &str,
) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        secret.expose_secret()
    ))
}
