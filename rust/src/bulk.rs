//! The bulk area: per-peer slices, per-connection extents and transfer
//! descriptors (docs/protocol.md §8).
//!
//! The bulk area (`bulk_off`, `bulk_size` in the header) is cut into
//! `max_peers` equal, page-aligned slices; peer `p` owns slice `p` and is the
//! only one that allocates from it. A connection's side allocates one
//! page-aligned *extent* in its own slice (with a local allocator, nothing is
//! kept in shared memory), offers it to the other side (`BULK_OFFER`), and then
//! lends ranges of it to the other side with `BULK_DATA` descriptors, which come
//! back with `BULK_RELEASE`. All offsets on the wire are relative to the
//! sender's slice (offers) or to the sender's extent (descriptors), so a
//! receiver only ever adds a validated small number to a locally computed base.

use super::layout::{Geometry, MAX_REGION_SIZE, MAX_RING_SIZE, PAGE};
use super::ring::{area_for_share, fair_share};

/// Payload length of every bulk frame: two little-endian u32 (`off`, `len`).
pub const DESC_LEN: u32 = super::frame::BULK_PAYLOAD;
/// Descriptors one direction of a connection may have outstanding (published by
/// the sender and not yet released by the receiver). A peer that exceeds it is
/// reset.
pub const MAX_DESCS: usize = 64;
/// Largest `bulk_percent` an initialiser may use (the geometry allows half).
pub const MAX_PERCENT: u32 = 50;

/// Bulk area size an initialiser uses for `percent` % of the (clamped) region:
/// rounded down so that every peer's slice is a whole number of pages, and
/// reduced (halved) until the rings still fit. 0 means no bulk area.
pub fn initial_size(region_size: usize, max_peers: u32, percent: u32) -> usize {
    let region = region_size.min(MAX_REGION_SIZE);
    let unit = PAGE.saturating_mul(max_peers as usize);
    if unit == 0 {
        return 0;
    }
    // `region` ≤ 1 GiB and the percentage ≤ 50, so the product fits in u64 (and the
    // quotient, at most half the region, in usize).
    let want = (region as u64).saturating_mul(u64::from(percent.min(MAX_PERCENT))) / 100;
    let mut size = usize::try_from(want).unwrap_or(0) / unit * unit;
    // Bounded: at most `usize::BITS` halvings.
    while size > 0 && Geometry::compute(region, max_peers, size).is_err() {
        size = size / 2 / unit * unit;
    }
    rings_first(region, max_peers, size, unit)
}

/// `size`, or a bulk area up to a quarter smaller whose transmit areas give the next larger
/// fair ring share (docs/protocol.md §1, §8.1): on 64 MiB with 16 slots, 25 % leaves 3068 KiB
/// areas (512 KiB shares); 13248 KiB of bulk leaves 3264 KiB, three 1 MiB rings each.
fn rings_first(region: usize, max_peers: u32, size: usize, unit: usize) -> usize {
    let Ok(g) = Geometry::compute(region, max_peers, size) else {
        return size;
    };
    let next = fair_share(g.area_size, max_peers).saturating_mul(2);
    if size == 0 || next > MAX_RING_SIZE {
        return size;
    }
    let smaller = area_for_share(next, max_peers)
        .and_then(|a| a.checked_next_multiple_of(PAGE))
        .and_then(|a| a.checked_mul(max_peers as usize))
        .and_then(|a| region.checked_sub(g.ring_data_off)?.checked_sub(a))
        .map_or(0, |b| b / unit * unit);
    let fits = Geometry::compute(region, max_peers, smaller)
        .is_ok_and(|h| fair_share(h.area_size, max_peers) == next);
    if fits && smaller < size && smaller >= size - size / 4 {
        smaller
    } else {
        size
    }
}

/// Bytes of one peer's slice: `floor(bulk_size / max_peers / PAGE) * PAGE`.
pub fn slice_size(g: &Geometry) -> usize {
    if g.max_peers == 0 {
        return 0;
    }
    g.bulk_size / g.max_peers as usize / PAGE * PAGE
}

/// Region offset of peer `id`'s slice; `None` for a bad id or no bulk area.
pub fn slice_off(g: &Geometry, id: u32) -> Option<usize> {
    let s = slice_size(g);
    if id >= g.max_peers || s == 0 {
        return None;
    }
    (id as usize)
        .checked_mul(s)?
        .checked_add(g.bulk_off)
        .filter(|&o| o + s <= g.bulk_off + g.bulk_size)
}

/// An extent offered by a peer (`off`, `len` relative to its slice), or a
/// descriptor (`off`, `len` relative to the sender's extent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Desc {
    /// Byte offset.
    pub off: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Desc {
    /// Wire form (the 8-byte payload of a bulk frame).
    pub fn encode(&self) -> [u8; DESC_LEN as usize] {
        let mut b = [0u8; DESC_LEN as usize];
        let (a, c) = b.split_at_mut(4);
        a.copy_from_slice(&self.off.to_le_bytes());
        c.copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Parses a bulk frame's payload; `None` unless it is exactly 8 bytes.
    pub fn decode(p: &[u8]) -> Option<Self> {
        if p.len() != DESC_LEN as usize {
            return None;
        }
        let mut o = [0u8; 4];
        let mut l = [0u8; 4];
        o.copy_from_slice(p.get(..4)?);
        l.copy_from_slice(p.get(4..8)?);
        Some(Self {
            off: u32::from_le_bytes(o),
            len: u32::from_le_bytes(l),
        })
    }

    /// End offset, if it does not overflow.
    pub fn end(&self) -> Option<u32> {
        self.off.checked_add(self.len)
    }

    /// Whether an offered extent is valid in a slice of `slice` bytes:
    /// page-aligned, not empty, inside the slice.
    pub fn valid_extent(&self, slice: usize) -> bool {
        self.len > 0
            && self.off as usize % PAGE == 0
            && self.len as usize % PAGE == 0
            && self.end().is_some_and(|e| e as usize <= slice)
    }

    /// Whether a descriptor is valid in an extent of `ext_len` bytes: not empty
    /// and inside the extent (any byte alignment).
    pub fn valid_in(&self, ext_len: u32) -> bool {
        self.len > 0 && self.end().is_some_and(|e| e <= ext_len)
    }

    /// Whether two ranges share a byte.
    pub fn overlaps(&self, o: &Desc) -> bool {
        let (a0, b0) = (u64::from(self.off), u64::from(o.off));
        let (a1, b1) = (a0 + u64::from(self.len), b0 + u64::from(o.len));
        a0 < b1 && b0 < a1
    }
}

/// First fit of `len` bytes (a page multiple) in a slice of `slice` bytes,
/// given the extents already in use (any order). Returns the offset.
pub fn first_fit(used: &[Desc], slice: usize, len: u32) -> Option<u32> {
    if len == 0 || len as usize % PAGE != 0 || len as usize > slice {
        return None;
    }
    let mut cand: u32 = 0;
    // Each pass either returns or moves `cand` past one used extent, so at
    // most `used.len() + 1` passes.
    for _ in 0..=used.len() {
        let want = Desc { off: cand, len };
        match used.iter().find(|u| u.overlaps(&want)) {
            None => {
                return want.end().filter(|&e| e as usize <= slice).map(|_| cand);
            }
            Some(u) => cand = u.end()?,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes() {
        // 4 MiB, 16 peers, 25 %: 1 MiB would leave 188 KiB transmit areas (32 KiB fair
        // rings); a quarter less, 768 KiB (48 KiB per peer), leaves 204 KiB: 64 KiB rings.
        let s = initial_size(4 << 20, 16, 25);
        assert_eq!(s, 768 << 10);
        let g = Geometry::compute(4 << 20, 16, s).unwrap();
        assert_eq!(slice_size(&g), 48 << 10);
        assert_eq!(g.area_size, 204 << 10);
        assert_eq!(slice_off(&g, 0), Some(g.bulk_off));
        assert_eq!(slice_off(&g, 15), Some(g.bulk_off + 15 * (48 << 10)));
        assert_eq!(slice_off(&g, 16), None);
        assert_eq!(initial_size(4 << 20, 16, 0), 0);
        // 16 peers in 256 KiB: 50 % leaves the rings too little; the area halves.
        assert_eq!(initial_size(256 << 10, 16, 50), 64 << 10);
        assert!(Geometry::compute(4 << 20, 64, initial_size(4 << 20, 64, 25)).is_ok());
        // The module's default, 25 %: bulk area and per-peer slices by region and slot count
        // (docs/protocol.md §8.1; rust/tests/rings.rs checks the rings of the same table).
        // 50 % (the bench's) is not cut: a quarter less would not reach the next ring size.
        for (region, peers, pct, bulk, slice) in [
            (4usize << 20, 16u32, 25u32, 768usize << 10, 48usize << 10),
            (16 << 20, 16, 25, 3264 << 10, 204 << 10),
            (64 << 20, 16, 25, 13248 << 10, 828 << 10),
            (64 << 20, 8, 25, 15328 << 10, 1916 << 10),
            (64 << 20, 4, 25, 16368 << 10, 4092 << 10),
            (256 << 20, 16, 25, 53184 << 10, 3324 << 10),
            (64 << 20, 16, 50, 32 << 20, 2 << 20),
        ] {
            assert_eq!(
                initial_size(region, peers, pct),
                bulk,
                "{region} {peers} {pct}"
            );
            let g = Geometry::compute(region, peers, bulk).unwrap();
            assert_eq!(slice_size(&g), slice, "{region} {peers}");
        }
        // The ring-first cut never takes more than a quarter, and never more than asked.
        for region in [1usize << 20, 4 << 20, 16 << 20, 64 << 20, 1 << 30] {
            for peers in [2u32, 3, 4, 8, 16, 64] {
                let unit = PAGE * peers as usize;
                for size in [0usize, 64 << 10, 1 << 20, region / 4, region / 2] {
                    let size = size / unit * unit;
                    if Geometry::compute(region, peers, size).is_err() {
                        continue;
                    }
                    let s = rings_first(region, peers, size, unit);
                    assert!(
                        s <= size && s >= size - size / 4,
                        "{region} {peers} {size} {s}"
                    );
                    assert!(Geometry::compute(region, peers, s).is_ok());
                }
            }
        }
        // Percent is capped at 50.
        assert!(initial_size(16 << 20, 2, 99) <= 8 << 20);
        let g = Geometry::compute(4 << 20, 16, 0).unwrap();
        assert_eq!(slice_size(&g), 0);
        assert_eq!(slice_off(&g, 0), None);
    }

    #[test]
    fn slices_are_aligned_and_disjoint_for_all_params() {
        for region in [64usize << 10, 1 << 20, 4 << 20, 16 << 20, 2 << 30] {
            for peers in 2..=64u32 {
                if Geometry::compute(region, peers, 0).is_err() {
                    continue;
                }
                for pct in [1u32, 10, 25, 50, 80] {
                    let s = initial_size(region, peers, pct);
                    let Ok(g) = Geometry::compute(region, peers, s) else {
                        panic!("{region} {peers} {pct} {s}");
                    };
                    let ss = slice_size(&g);
                    assert_eq!(ss % PAGE, 0);
                    assert!(g.ring_data_end() <= g.bulk_off || s == 0);
                    for p in 0..peers {
                        if let Some(o) = slice_off(&g, p) {
                            assert_eq!(o % PAGE, 0);
                            assert!(o + ss <= g.region_size);
                            assert!(o >= g.ring_data_end());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn descs() {
        let d = Desc {
            off: 4096,
            len: 8192,
        };
        assert_eq!(Desc::decode(&d.encode()), Some(d));
        assert_eq!(Desc::decode(&[0; 7]), None);
        assert_eq!(Desc::decode(&[0; 9]), None);
        assert!(d.valid_extent(12288));
        assert!(!d.valid_extent(12287));
        assert!(!Desc { off: 1, len: 4096 }.valid_extent(1 << 20));
        assert!(!Desc { off: 0, len: 100 }.valid_extent(1 << 20));
        assert!(!Desc { off: 0, len: 0 }.valid_extent(1 << 20));
        assert!(!Desc {
            off: u32::MAX - 4095,
            len: 8192
        }
        .valid_extent(usize::MAX));
        assert!(Desc { off: 1, len: 99 }.valid_in(100));
        assert!(!Desc { off: 1, len: 100 }.valid_in(100));
        assert!(!Desc { off: 0, len: 0 }.valid_in(100));
        assert!(!Desc {
            off: u32::MAX,
            len: 2
        }
        .valid_in(u32::MAX));
        assert!(d.overlaps(&Desc { off: 12287, len: 1 }));
        assert!(!d.overlaps(&Desc { off: 12288, len: 1 }));
        assert!(!d.overlaps(&Desc { off: 0, len: 4096 }));
    }

    #[test]
    fn allocator() {
        let slice = 16 * PAGE;
        let p = PAGE as u32;
        assert_eq!(first_fit(&[], slice, 4 * p), Some(0));
        let used = [
            Desc { off: 0, len: 4 * p },
            Desc {
                off: 8 * p,
                len: 4 * p,
            },
        ];
        assert_eq!(first_fit(&used, slice, 4 * p), Some(4 * p));
        assert_eq!(first_fit(&used, slice, 5 * p), None);
        let used = [
            Desc {
                off: 8 * p,
                len: 4 * p,
            },
            Desc { off: 0, len: 4 * p },
        ];
        assert_eq!(first_fit(&used, slice, 4 * p), Some(4 * p));
        assert_eq!(first_fit(&used, slice, 100), None);
        assert_eq!(first_fit(&used, slice, 0), None);
        assert_eq!(first_fit(&[], slice, 17 * p), None);
        let full = [Desc {
            off: 0,
            len: 16 * p,
        }];
        assert_eq!(first_fit(&full, slice, p), None);
    }
}
