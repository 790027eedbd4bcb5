//! Parity parts: a systematic Reed–Solomon erasure code over the parts' bytes (the
//! ciphertext, so no key is needed), so that any `N` damaged or lost parts of a set with
//! `N` parity parts can be rebuilt from the rest.
//!
//! The code is Leopard-RS over GF(2^16) in its *high rate* form, as implemented by
//! `reed-solomon-simd` 3.x (`rate::HighRateEncoder` / `HighRateDecoder`); this module
//! only cuts the parts into stripes and feeds them through it. The layout (see
//! docs/FORMAT.md, "Parity parts"):
//!
//! - `K` data parts, each conceptually zero-padded to the part size `P` (the first part's
//!   size); `N` parity parts, each `P` rounded up to an even number of bytes.
//! - Stripe `j` covers bytes `[j·W, min((j+1)·W, P))` of every part, for the stripe width
//!   `W` ([`stripe_width`]); the shards of one stripe are those byte ranges, each
//!   zero-padded to an even length `L` (the code works on 16-bit symbols), data shards
//!   `0..K` in part order; the recovery shards `0..N` of that encoding are bytes
//!   `[j·W, j·W + L)` of parity parts `1..=N`.
//!
//! Only one stripe of every part is in memory at a time: with the width rule, `(K + N) ·
//! W ≤` [`STRIPE_BUDGET`] so memory is bounded whatever the part size. The output depends
//! only on the input bytes and `(K, N, P, W)`: the same bundle gives byte-identical parity.

use std::io::{self, Write};

use crate::hashing::HashingWriter;
use crate::Digest;

use super::{Layout, SUMS_COMMENT, SUMS_COMMENT_V3};

mod files;
mod stripes;

pub use files::{write_parity, FileShards, OPEN_AT_ONCE};
use stripes::{in_parallel, Stripe};

use reed_solomon_simd::engine::DefaultEngine;
use reed_solomon_simd::rate::{HighRateDecoder, HighRateEncoder, RateDecoder, RateEncoder};

/// The scheme's name in the sums' trusted comment (`parity=...`).
pub const SCHEME: &str = "leopard16-high";
/// How many bytes of all shards of one stripe together (`(K + N) · W`) a writer allows.
pub const STRIPE_BUDGET: usize = 8 << 20;
/// The widest stripe: wider gains nothing once the kernels are busy.
pub const MAX_STRIPE: usize = 1 << 20;
/// The narrowest stripe a writer picks (one 64-byte block of the code's layout).
pub const MIN_STRIPE: usize = 64;

/// The stripe width a writer uses for `k` data and `n` parity parts: the largest power of
/// two from [`MIN_STRIPE`] to [`MAX_STRIPE`] with `(k + n) · W ≤ STRIPE_BUDGET`
/// ([`MIN_STRIPE`] if none is).
pub fn stripe_width(k: usize, n: usize) -> usize {
    let shards = (k + n).max(1);
    let mut w = MAX_STRIPE;
    while w > MIN_STRIPE && shards.saturating_mul(w) > STRIPE_BUDGET {
        w /= 2;
    }
    w
}

/// The parameters of a part set's parity, as recorded in its signed sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// `K`: how many data parts.
    pub data: usize,
    /// `N`: how many parity parts.
    pub parity: usize,
    /// `P`: the size every data part is padded to for coding (the first part's size).
    pub part_size: u64,
    /// `W`: bytes of each part per stripe.
    pub stripe: usize,
}

impl Scheme {
    /// The scheme a writer uses for `data` parts of `part_size` and `parity` parity parts;
    /// `None` if the code cannot have that many shards, or a count is zero.
    pub fn new(data: usize, parity: usize, part_size: u64) -> Option<Scheme> {
        Scheme {
            data,
            parity,
            part_size,
            stripe: stripe_width(data, parity),
        }
        .checked()
    }

    /// `self` if a reader can use it: counts the code supports, a non-zero part size and
    /// an even stripe width from 2 to [`MAX_STRIPE`].
    pub fn checked(self) -> Option<Scheme> {
        let ok = self.data > 0
            && self.parity > 0
            && self.part_size > 0
            && self.stripe >= 2
            && self.stripe % 2 == 0
            && self.stripe <= MAX_STRIPE
            && self
                .data
                .checked_add(self.parity.next_power_of_two())
                .is_some_and(|s| s <= 65536);
        ok.then_some(self)
    }

    /// The size of every parity part: the part size rounded up to an even number.
    pub fn parity_size(&self) -> u64 {
        self.part_size + self.part_size % 2
    }

    /// Stripe `j`, if the parts have one.
    fn stripe_at(&self, j: u64) -> Option<Stripe> {
        let off = j.checked_mul(self.stripe as u64)?;
        (off < self.part_size).then(|| {
            let len = (self.part_size - off).min(self.stripe as u64) as usize;
            Stripe {
                off,
                len,
                shard: len + len % 2,
            }
        })
    }
}

/// Where the coder reads shards from: data parts `0..K`, then parity parts `K..K+N`.
/// Stripes are read on several threads at once.
pub trait ShardSource: Sync {
    /// Fills `buf` with the bytes of shard `shard` from `offset`; bytes past the end of that
    /// part (a short last part) must be zeros.
    fn read_at(&self, shard: usize, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// What went wrong computing or rebuilding parity.
#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    #[error(
        "{} parts lost or damaged but only {parity} parity parts: {} more good parts would be needed",
        .lost.len(),
        .lost.len() - .parity
    )]
    TooManyLost { lost: Vec<usize>, parity: usize },
    #[error("shard {0} is not part of this set")]
    NoSuchShard(usize),
    #[error("erasure code: {0}")]
    Code(#[from] reed_solomon_simd::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Computes the `N` parity parts of `src`'s data parts, writing parity part `i` (0-based)
/// to `out[i]` from its first byte, stripe by stripe (stripes are coded on two threads and
/// written in order).
pub fn encode<W: Write + Send>(
    scheme: &Scheme,
    src: &impl ShardSource,
    out: &mut [W],
) -> Result<(), ParityError> {
    assert_eq!(out.len(), scheme.parity, "one writer per parity part");
    let (k, n, w) = (scheme.data, scheme.parity, scheme.stripe);
    struct Worker {
        buf: Vec<u8>,
        recovery: Vec<u8>,
        coder: Option<HighRateEncoder<DefaultEngine>>,
    }
    in_parallel(
        scheme,
        || Worker {
            buf: vec![0u8; w],
            recovery: vec![0u8; n * w],
            coder: None,
        },
        |t, s| {
            let mut e = new_encoder(t.coder.take(), scheme, s.shard)?;
            for i in 0..k {
                read_shard(src, i, k, s, &mut t.buf)?;
                e.add_original_shard(&t.buf[..s.shard])?;
            }
            let result = e.encode()?;
            for (r, bytes) in result.recovery_iter().enumerate() {
                t.recovery[r * w..r * w + s.shard].copy_from_slice(bytes);
            }
            drop(result);
            t.coder = Some(e);
            Ok(())
        },
        &mut *out,
        |out, t, s| {
            for (r, o) in out.iter_mut().enumerate() {
                o.write_all(&t.recovery[r * w..r * w + s.shard])?;
            }
            Ok(())
        },
    )?;
    for o in out {
        o.flush()?;
    }
    Ok(())
}

/// Rebuilds the shards in `lost` (data `0..K`, parity `K..K+N`; each at most once) from
/// the others: shard `lost[i]` is written to `out[i]` from its first byte, a data part at
/// its real size `size(lost[i])`, a parity part at [`Scheme::parity_size`].
///
/// The shards in `watch` (not lost) are read whole, as they are, and hashed on the way
/// (their real bytes: a data part's `size`, a parity part's [`Scheme::parity_size`]);
/// returned are their sha256 and byte counts, in `watch` order, with `on_bytes` told of
/// every byte hashed. The rebuilt shards are right if `src` read correctly: a caller that
/// has not yet checked the shards it reads watches them, and checks the digests before it
/// trusts the result.
///
/// More than `N` lost is refused before anything is read or written.
pub fn rebuild<W: Write + Send>(
    scheme: &Scheme,
    src: &impl ShardSource,
    lost: &[usize],
    size: impl Fn(usize) -> u64 + Sync,
    out: &mut [W],
    watch: &[usize],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Vec<(Digest, u64)>, ParityError> {
    assert_eq!(out.len(), lost.len(), "one writer per lost shard");
    let (k, n, w) = (scheme.data, scheme.parity, scheme.stripe);
    if let Some(&bad) = lost.iter().chain(watch).find(|&&s| s >= k + n) {
        return Err(ParityError::NoSuchShard(bad));
    }
    if lost.len() > n {
        return Err(ParityError::TooManyLost {
            lost: lost.to_vec(),
            parity: n,
        });
    }
    assert!(
        !watch.iter().any(|s| lost.contains(s)),
        "a lost shard is not read"
    );
    let is_lost = |s: usize| lost.contains(&s);
    let lost_data = lost.iter().any(|&s| s < k);
    let lost_parity = lost.iter().any(|&s| s >= k);
    // The recovery shards read when data is lost: as many good ones as data shards lost.
    let need = lost.iter().filter(|&&s| s < k).count();
    let recovery: Vec<usize> = (0..n).filter(|&r| !is_lost(k + r)).take(need).collect();
    // Every data part not lost (the decoder's originals, and the encoder's when parity is
    // rebuilt), the recovery shards the decoder takes, and whatever is watched.
    let mut read: Vec<usize> = (0..k)
        .filter(|&i| !is_lost(i))
        .chain(recovery.iter().map(|r| k + r))
        .chain(watch.iter().copied())
        .collect();
    read.sort_unstable();
    read.dedup();
    // A shard's real bytes in a stripe: a data part ends at its size.
    let real = |i: usize, s: Stripe| {
        if i < k {
            size(i).saturating_sub(s.off).min(s.len as u64) as usize
        } else {
            s.shard
        }
    };

    struct Worker {
        /// Stripe `j` of every shard `i` at `[i·W, i·W + shard)`.
        shards: Vec<u8>,
        dec: Option<HighRateDecoder<DefaultEngine>>,
        enc: Option<HighRateEncoder<DefaultEngine>>,
    }
    struct Writers<'o, W> {
        out: &'o mut [W],
        seen: Vec<HashingWriter<io::Sink>>,
    }
    let mut writers = Writers {
        out,
        seen: watch
            .iter()
            .map(|_| HashingWriter::new(io::sink()))
            .collect(),
    };
    in_parallel(
        scheme,
        || Worker {
            shards: vec![0u8; (k + n) * w],
            dec: None,
            enc: None,
        },
        |t, s| {
            for &i in &read {
                read_shard(src, i, k, s, &mut t.shards[i * w..(i + 1) * w])?;
            }
            let shard = |i: usize| i * w..i * w + s.shard;
            if lost_data {
                let mut d = match t.dec.take() {
                    Some(mut d) => {
                        d.reset(k, n, s.shard)?;
                        d
                    }
                    None => HighRateDecoder::new(k, n, s.shard, DefaultEngine::new(), None)?,
                };
                for i in (0..k).filter(|&i| !is_lost(i)) {
                    d.add_original_shard(i, &t.shards[shard(i)])?;
                }
                for &r in &recovery {
                    d.add_recovery_shard(r, &t.shards[shard(k + r)])?;
                }
                let result = d.decode()?;
                for (i, restored) in result.restored_original_iter() {
                    t.shards[i * w..i * w + s.shard].copy_from_slice(restored);
                }
                drop(result);
                t.dec = Some(d);
            }
            if lost_parity {
                let mut e = new_encoder(t.enc.take(), scheme, s.shard)?;
                for i in 0..k {
                    e.add_original_shard(&t.shards[shard(i)])?;
                }
                let result = e.encode()?;
                for (r, bytes) in result.recovery_iter().enumerate() {
                    if is_lost(k + r) {
                        t.shards[(k + r) * w..(k + r) * w + s.shard].copy_from_slice(bytes);
                    }
                }
                drop(result);
                t.enc = Some(e);
            }
            Ok(())
        },
        &mut writers,
        |o, t, s| {
            for (h, &i) in o.seen.iter_mut().zip(watch) {
                let bytes = real(i, s);
                h.write_all(&t.shards[i * w..i * w + bytes])?;
                on_bytes(bytes as u64);
            }
            for (&i, out) in lost.iter().zip(o.out.iter_mut()) {
                // A data part is written at its real size, not padded.
                out.write_all(&t.shards[i * w..i * w + real(i, s)])?;
            }
            Ok(())
        },
    )?;
    for o in writers.out.iter_mut() {
        o.flush()?;
    }
    Ok(writers
        .seen
        .into_iter()
        .map(|h| {
            let (digest, size, _) = h.finish();
            (digest, size)
        })
        .collect())
}

fn new_encoder(
    reuse: Option<HighRateEncoder<DefaultEngine>>,
    scheme: &Scheme,
    shard: usize,
) -> Result<HighRateEncoder<DefaultEngine>, ParityError> {
    Ok(match reuse {
        Some(mut e) => {
            e.reset(scheme.data, scheme.parity, shard)?;
            e
        }
        None => HighRateEncoder::new(
            scheme.data,
            scheme.parity,
            shard,
            DefaultEngine::new(),
            None,
        )?,
    })
}

/// Reads shard `i`'s bytes of stripe `s` into `buf`, zero-padded to the shard length: a
/// data part (`i < k`) has `s.len` bytes there, a parity part a whole shard.
fn read_shard(
    src: &impl ShardSource,
    i: usize,
    k: usize,
    s: Stripe,
    buf: &mut [u8],
) -> io::Result<()> {
    let len = if i < k { s.len } else { s.shard };
    src.read_at(i, s.off, &mut buf[..len])?;
    buf[len..s.shard].fill(0);
    Ok(())
}

impl Layout {
    /// The trusted comment of sums that list `parity` parity parts after the data parts,
    /// then `carried` files: always v3, `carried=K parity=N code=C stripe=W` after the
    /// layout.
    pub(super) fn comment_with_parity(&self, carried: usize, parity: &Scheme) -> String {
        let v1 = self.comment();
        format!(
            "{SUMS_COMMENT_V3}{} carried={carried} parity={} code={} stripe={}",
            &v1[SUMS_COMMENT.len()..],
            parity.parity,
            SCHEME,
            parity.stripe
        )
    }

    /// The parity a sums comment records: `Some((0, None))` for v1 and v2; for v3 the
    /// count `parity=N`, with the scheme when its `code` is the one this reader implements
    /// and its parameters are usable; `None` if the comment is not a sums comment or a v3
    /// one lacks a parity count.
    pub fn parity_in_comment(c: &str) -> Option<(usize, Option<Scheme>)> {
        let Some(rest) = c.strip_prefix(SUMS_COMMENT_V3) else {
            return Layout::carried_in_comment(c).map(|_| (0, None));
        };
        let get = |key: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        let n: usize = get("parity")?.parse().ok()?;
        let layout = Layout::parse_comment(c);
        let scheme = (|| {
            let l = layout?;
            (get("code")? == SCHEME).then_some(())?;
            Scheme {
                data: l.parts,
                parity: n,
                part_size: l.part_size.unwrap_or(l.total),
                stripe: get("stripe")?.parse().ok()?,
            }
            .checked()
        })();
        Some((n, scheme))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Parts in memory; a lost one reads as garbage, so a test sees it is never read.
    struct Mem<'a> {
        parts: &'a [Vec<u8>],
        lost: &'a [usize],
    }

    impl ShardSource for Mem<'_> {
        fn read_at(&self, shard: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            assert!(!self.lost.contains(&shard), "read lost shard {shard}");
            let p = &self.parts[shard];
            for (j, b) in buf.iter_mut().enumerate() {
                *b = p.get(offset as usize + j).copied().unwrap_or(0);
            }
            Ok(())
        }
    }

    fn data(k: usize, part: usize, last: usize, seed: u8) -> Vec<Vec<u8>> {
        (0..k)
            .map(|i| {
                let n = if i + 1 == k { last } else { part };
                (0..n)
                    .map(|j| (j as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(97) ^ seed)
                    .collect()
            })
            .collect()
    }

    fn parity_of(s: &Scheme, parts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new(); s.parity];
        encode(s, &Mem { parts, lost: &[] }, &mut out).unwrap();
        out
    }

    fn combinations(n: usize, r: usize) -> Vec<Vec<usize>> {
        if r == 0 {
            return vec![vec![]];
        }
        (0..n)
            .flat_map(|first| {
                combinations(n - first - 1, r - 1)
                    .into_iter()
                    .map(move |rest| {
                        std::iter::once(first)
                            .chain(rest.into_iter().map(|x| x + first + 1))
                            .collect()
                    })
            })
            .collect()
    }

    /// Every combination of up to N lost parts (data and parity) is rebuilt byte for byte,
    /// for odd part sizes, a short last part, and stripes narrower than a part.
    #[test]
    fn round_trip_every_loss_up_to_n() {
        for (n, part, last, stripe) in [
            (1, 1001, 17, 64),
            (2, 777, 777, 128),
            (4, 333, 1, 64),
            (2, 64, 63, 2),
        ] {
            let k = 5;
            let parts = data(k, part, last, n as u8);
            let mut s = Scheme::new(k, n, part as u64).unwrap();
            s.stripe = stripe;
            let parity = parity_of(&s, &parts);
            assert!(parity.iter().all(|p| p.len() as u64 == s.parity_size()));
            let all: Vec<Vec<u8>> = parts.iter().chain(&parity).cloned().collect();
            for r in 1..=n {
                for lost in combinations(k + n, r) {
                    let mut out = vec![Vec::new(); lost.len()];
                    rebuild(
                        &s,
                        &Mem {
                            parts: &all,
                            lost: &lost,
                        },
                        &lost,
                        |i| all[i].len() as u64,
                        &mut out,
                        &[],
                        &|_| {},
                    )
                    .unwrap_or_else(|e| panic!("n={n} lost {lost:?}: {e}"));
                    for (&i, got) in lost.iter().zip(&out) {
                        assert!(got == &all[i], "n={n} lost {lost:?}: part {i} differs");
                    }
                }
            }
        }
    }

    #[test]
    fn more_lost_than_parity_is_refused_before_reading() {
        let parts = data(4, 100, 50, 0);
        let s = Scheme::new(4, 2, 100).unwrap();
        let parity = parity_of(&s, &parts);
        let all: Vec<Vec<u8>> = parts.iter().chain(&parity).cloned().collect();
        let lost = [0, 3, 5];
        let mut out = vec![Vec::new(); 3];
        let err = rebuild(
            &s,
            &Mem {
                parts: &all,
                lost: &[0, 1, 2, 3, 4, 5],
            },
            &lost,
            |i| all[i].len() as u64,
            &mut out,
            &[],
            &|_| {},
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "3 parts lost or damaged but only 2 parity parts: 1 more good parts would be needed"
        );
        assert!(out.iter().all(Vec::is_empty));
    }

    #[test]
    fn deterministic_and_bound_to_the_bytes() {
        let parts = data(6, 4099, 1000, 7);
        let s = Scheme::new(6, 3, 4099).unwrap();
        let a = parity_of(&s, &parts);
        assert_eq!(a, parity_of(&s, &parts));
        let mut changed = parts.clone();
        changed[2][4000] ^= 1;
        assert_ne!(a, parity_of(&s, &changed));
    }

    /// Pins the code itself: a change of crate version or rate that changed parity bytes
    /// would make sets written before unrepairable.
    #[test]
    fn parity_bytes_are_pinned() {
        use sha2::{Digest as _, Sha256};
        let parts = data(3, 200, 99, 1);
        let s = Scheme::new(3, 2, 200).unwrap();
        let p = parity_of(&s, &parts);
        let h: Vec<String> = p.iter().map(|x| hex::encode(Sha256::digest(x))).collect();
        assert_eq!(
            h,
            [
                "c77db89c543d9e6cc3c6a5b6d96cabb99cb8d83917b1e5bb09b4c09ed83eece7",
                "76a6b7cd594c4ea994aa843d2780b6da36c31e0e13c9bef41b8f7bcf58a435c1"
            ],
            "parity bytes changed"
        );
    }

    /// More parts than are kept open: each read opens its file again, with the same bytes.
    #[test]
    fn file_shards_beyond_the_open_limit_code_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let k = OPEN_AT_ONCE + 9;
        let parts = data(k, 30, 7, 3);
        let mut paths = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let path = dir.path().join(format!("b.{i:03}"));
            std::fs::write(&path, p).unwrap();
            paths.push(path);
        }
        let s = Scheme::new(k, 3, 30).unwrap();
        let mut from_files = vec![Vec::new(); 3];
        encode(&s, &FileShards::new(paths.clone()), &mut from_files).unwrap();
        assert_eq!(from_files, parity_of(&s, &parts));
        for (i, p) in from_files.iter().enumerate() {
            let path = dir.path().join(format!("b.p{i:02}"));
            std::fs::write(&path, p).unwrap();
            paths.push(path);
        }
        let lost = [1, k - 1, k + 2];
        let mut out = vec![Vec::new(); 3];
        let src = FileShards::new(paths);
        rebuild(
            &s,
            &src,
            &lost,
            |i| parts.get(i).map_or(30, |p| p.len() as u64),
            &mut out,
            &[],
            &|_| {},
        )
        .unwrap();
        assert_eq!(
            out,
            [
                parts[1].clone(),
                parts[k - 1].clone(),
                from_files[2].clone()
            ]
        );
    }

    /// Watched shards are hashed as read, whole and in order, while the lost ones are
    /// rebuilt: the digests are those of the parts' real bytes (a short last part without
    /// its padding), across many stripes coded on two threads.
    #[test]
    fn watched_shards_are_hashed_whole_while_rebuilding() {
        let parts = data(5, 1000, 333, 9);
        let mut s = Scheme::new(5, 2, 1000).unwrap();
        s.stripe = 64;
        let parity = parity_of(&s, &parts);
        let all: Vec<Vec<u8>> = parts.iter().chain(&parity).cloned().collect();
        let (lost, watch) = ([1, 5], [0, 2, 3, 4, 6]);
        let mut out = vec![Vec::new(); 2];
        let counted = AtomicU64::new(0);
        let seen = rebuild(
            &s,
            &Mem {
                parts: &all,
                lost: &lost,
            },
            &lost,
            |i| all[i].len() as u64,
            &mut out,
            &watch,
            &|n| {
                counted.fetch_add(n, Ordering::Relaxed);
            },
        )
        .unwrap();
        assert_eq!(out, [all[1].clone(), all[5].clone()]);
        let expected: Vec<(Digest, u64)> = watch
            .iter()
            .map(|&i| (Digest::of(&all[i]), all[i].len() as u64))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(
            counted.load(Ordering::Relaxed),
            expected.iter().map(|(_, n)| n).sum::<u64>()
        );
    }

    /// A read that fails part-way (on whichever thread) ends the run with that error: no
    /// thread waits forever for the failed stripe's turn, nothing after it is written.
    #[test]
    fn a_failed_read_stops_every_thread_with_its_error() {
        struct Failing<'a> {
            inner: Mem<'a>,
            at: u64,
        }
        impl ShardSource for Failing<'_> {
            fn read_at(&self, shard: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
                if shard == 2 && offset == self.at {
                    return Err(io::Error::other("bad sector"));
                }
                self.inner.read_at(shard, offset, buf)
            }
        }
        let parts = data(4, 4096, 4096, 3);
        let mut s = Scheme::new(4, 1, 4096).unwrap();
        s.stripe = 64;
        let at = 64 * 17;
        let mut out = vec![Vec::new()];
        let src = Failing {
            inner: Mem {
                parts: &parts,
                lost: &[],
            },
            at,
        };
        let err = encode(&s, &src, &mut out).unwrap_err();
        assert_eq!(err.to_string(), "bad sector");
        assert_eq!(
            out[0].len() as u64,
            at,
            "stripes before the failed one only"
        );
        assert_eq!(&out[0][..], &parity_of(&s, &parts)[0][..at as usize]);
    }

    #[test]
    fn stripe_width_keeps_a_stripe_within_budget() {
        assert_eq!(stripe_width(4, 1), MAX_STRIPE);
        assert_eq!(stripe_width(12, 2), 512 << 10);
        assert_eq!(stripe_width(10_000, 1_000), 512);
        assert_eq!(stripe_width(200_000, 1), MIN_STRIPE);
        for (k, n) in [(1, 1), (10, 1), (100, 10), (10_000, 10_000)] {
            let s = Scheme::new(k, n, 1 << 30);
            assert!(s.is_some(), "{k}+{n}");
            assert!((k + n) * s.unwrap().stripe <= STRIPE_BUDGET);
        }
        assert!(
            Scheme::new(1, 4, 10).is_some(),
            "more parity than data parts"
        );
        assert_eq!(
            Scheme::new(60_000, 8_192, 10),
            None,
            "more shards than GF(2^16) has"
        );
        assert_eq!(Scheme::new(3, 0, 10), None);
    }
}
