//! The parity vector: `v5-parity.airlock.001`… (the v1 image content as version 5, cut into
//! parts like `v3-split`) with two parity parts `.p01`/`.p02` listed in signed sums v3.
//! The parity bytes and the sums' trusted comment come from `airlock-bundle`'s own
//! writers (`parity::write_parity`, `write_sums_with`), as `airlock-pack build --parity`
//! makes them, so that the committed bytes pin the Reed–Solomon layout for every future
//! reader and writer (`airlock-unpack repair` must rebuild exactly these bytes).

use std::io::Write as _;

use airlock_bundle::crypt::Encryption;
use airlock_bundle::header::Header;
use airlock_bundle::parts::{parity, write_sums_with, Part, PartWriter};

use super::{encrypt, plaintext, Vectors, PART_SIZE};

/// How many parity parts the vector has: two, so that a test can lose a data part and
/// damage a parity part at once and still rebuild both.
const PARITY: usize = 2;

/// Version 5: the v1 image content, nothing else (the parity is outside the bundle bytes).
pub(super) fn v5_parity(v1: Header) -> Header {
    Header {
        name: "v5-parity".into(),
        version: 5,
        provenance: Vec::new(),
        ..v1
    }
}

impl Vectors<'_> {
    /// Writes `dir/name`'s plain parts of [`PART_SIZE`], its [`PARITY`] parity parts and
    /// the signed sums v3 listing both, and `expected/name.header.json`.
    pub(super) fn write_with_parity(&self, name: &str, header: &Header) -> anyhow::Result<()> {
        self.expect(name, header)?;
        let split = Some(PART_SIZE);
        let parts = self.write_parts(name, header, &Encryption::None, split)?;
        let (scheme, pp) = parity::write_parity(self.dir, name, &parts, PARITY)?;
        write_sums_with(
            self.dir,
            name,
            &parts,
            split,
            Some((&scheme, pp.as_slice())),
            &[],
            &self.keys.sign,
        )?;
        Ok(())
    }

    /// The bundle's bytes, encrypted as `enc`, as `dir/name` or its parts of `split` bytes;
    /// the parts written. Shared with [`Vectors::write`] (here for the parent's size limit).
    pub(super) fn write_parts(
        &self,
        name: &str,
        header: &Header,
        enc: &Encryption,
        split: Option<u64>,
    ) -> anyhow::Result<Vec<Part>> {
        let plain = plaintext(header, &self.keys.sign, self.blobs)?;
        let bytes = encrypt(&plain, enc)?;
        let mut out = PartWriter::new(self.dir, name, split);
        out.write_all(&bytes)?;
        Ok(out.finish()?)
    }
}
