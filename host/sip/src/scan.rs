//! One pass over a message's header section, 64 bytes at a time: line ends, plus the checks
//! every header byte needs (ASCII, no bare CR), so no parser rescans for them.

const BLOCK: usize = 64;

/// Bit `i` set where byte `i` of the block is LF, CR, or has its high bit set.
#[derive(Clone, Copy, Default)]
struct Masks {
    lf: u64,
    cr: u64,
    high: u64,
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks(block: &[u8; BLOCK]) -> Masks {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let mut m = Masks::default();
    for (k, part) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86_64 baseline, `part` is 16 readable bytes, and
        // loadu has no alignment requirement.
        let (lf, cr, high) = unsafe {
            let v = _mm_loadu_si128(part.as_ptr().cast());
            (
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8))),
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\r' as i8))),
                _mm_movemask_epi8(v),
            )
        };
        // movemask fills only the low 16 bits.
        let shift = 16 * k;
        m.lf |= u64::from(lf as u16) << shift;
        m.cr |= u64::from(cr as u16) << shift;
        m.high |= u64::from(high as u16) << shift;
    }
    m
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn masks_scalar(block: &[u8; BLOCK]) -> Masks {
    let mut m = Masks::default();
    for (i, &c) in block.iter().enumerate() {
        m.lf |= u64::from(c == b'\n') << i;
        m.cr |= u64::from(c == b'\r') << i;
        m.high |= u64::from(c >= 0x80) << i;
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
use masks_scalar as masks;

/// The masks of the last, partial block at `base`, zero-padded (NUL is neither LF nor CR).
#[cold]
#[inline(never)]
fn tail_masks(b: &[u8], base: usize) -> Masks {
    let mut block = [0u8; BLOCK];
    let tail = b.get(base..).unwrap_or_default();
    let n = tail.len().min(BLOCK);
    block[..n].copy_from_slice(&tail[..n]);
    masks(&block)
}

/// A defect of the bytes of a header section.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadDefect {
    /// A byte has its high bit set: the section needs a full UTF-8 check.
    NonAscii,
    /// A CR is not followed by LF.
    BareCr,
}

/// Finds the line ends of a header section (the start line, header lines, and the empty
/// line that ends the section) and checks its bytes as it goes.
pub(crate) struct HeadScan<'a> {
    b: &'a [u8],
    /// Offset of the next block to read.
    next_block: usize,
    /// One past the LF of the empty line, once found.
    end: Option<usize>,
    /// A byte with its high bit set, or a CR not followed by LF, was seen.
    high: bool,
    bare_cr: bool,
    /// The LF and CR masks of the block before `next_block` (its last bytes matter for an
    /// empty line or a CR split across blocks).
    prev_lf: u64,
    prev_cr: u64,
}

impl<'a> HeadScan<'a> {
    /// Scans from `from`, where the start line begins.
    pub(crate) fn new(b: &'a [u8], from: usize) -> Self {
        HeadScan {
            b,
            next_block: from,
            end: None,
            high: false,
            bare_cr: false,
            // A line starts at `from`, as if after an LF.
            prev_lf: 1 << (BLOCK - 1),
            prev_cr: 0,
        }
    }

    /// Appends the LF positions of the next lines to `out` until it is full or the section
    /// ends; returns how many were appended. Zero means the section is over or the buffer
    /// ran out without an empty line.
    pub(crate) fn fill(&mut self, out: &mut [usize]) -> usize {
        if self.end.is_some() {
            return 0;
        }
        // Locals rather than fields in the loop, so they stay in registers; the checks are
        // accumulated as bit sets and tested once at the end.
        let b = self.b;
        let mut base = self.next_block;
        let (mut prev_lf, mut prev_cr) = (self.prev_lf, self.prev_cr);
        let (mut bare, mut high) = (0u64, 0u64);
        let mut n = 0;
        while n < out.len() && base < b.len() {
            let m = match b
                .get(base..base + BLOCK)
                .and_then(|s| <&[u8; BLOCK]>::try_from(s).ok())
            {
                Some(block) => masks(block),
                None => tail_masks(b, base),
            };
            // Most blocks are the middle of a line: nothing to record or check.
            if m.lf | m.cr | m.high | (prev_cr >> (BLOCK - 1)) == 0 {
                (prev_lf, prev_cr) = (0, 0);
                base += BLOCK;
                continue;
            }
            // Each byte's predecessors, the previous block's last bytes shifted in.
            let lf_before = (m.lf << 1) | (prev_lf >> (BLOCK - 1));
            let lf_two_before = (m.lf << 2) | (prev_lf >> (BLOCK - 2));
            let cr_before = (m.cr << 1) | (prev_cr >> (BLOCK - 1));
            // An LF right after LF, or after CR after LF, ends an empty line.
            let empties = m.lf & (lf_before | (cr_before & lf_two_before));
            let upto_end = match empties {
                0 => u64::MAX,
                e => e ^ (e - 1),
            };
            let mut lfs = m.lf & upto_end;
            let mut last = 0;
            while lfs != 0 && n < out.len() {
                last = lfs.trailing_zeros();
                lfs &= lfs - 1;
                if let Some(slot) = out.get_mut(n) {
                    *slot = base + last as usize;
                }
                n += 1;
            }
            // Bytes of this block that belong to what was scanned: all of them unless the
            // section, or the room in `out`, ends inside it.
            let keep = if lfs != 0 {
                u64::MAX >> (BLOCK as u32 - 1 - last)
            } else {
                upto_end
            };
            bare |= cr_before & !m.lf & keep;
            high |= m.high & keep;
            let out_full = lfs != 0;
            if empties == 0 && !out_full {
                (prev_lf, prev_cr) = (m.lf, m.cr);
                base += BLOCK;
                continue;
            }
            if !out_full {
                self.end = Some(base + keep.count_ones() as usize);
            }
            // Stopped right after an LF: that is all the next block needs to know.
            (prev_lf, prev_cr) = (1 << (BLOCK - 1), 0);
            base += keep.count_ones() as usize;
            break;
        }
        self.next_block = base;
        (self.prev_lf, self.prev_cr) = (prev_lf, prev_cr);
        self.bare_cr |= bare != 0;
        self.high |= high != 0;
        n
    }

    /// One past the LF of the empty line that ends the section, once found.
    #[cfg(test)]
    fn end(&self) -> Option<usize> {
        self.end
    }

    /// What is wrong with the bytes scanned, bare CRs first.
    pub(crate) fn defect(&self) -> Option<HeadDefect> {
        if self.bare_cr {
            Some(HeadDefect::BareCr)
        } else if self.high {
            Some(HeadDefect::NonAscii)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(odd: u8) -> Vec<u8> {
        let mut text = Vec::new();
        for len in 0..40 {
            text.extend(std::iter::repeat_n(b'a' + (len % 26) as u8, len));
            text.push(match len % 4 {
                0 => b'\r',
                1 => odd,
                _ => b' ',
            });
            text.push(b'\n');
        }
        text
    }

    /// Scans `text` from `from` with a small output buffer, so refills happen mid-block.
    fn scan_all(text: &[u8], from: usize) -> (Vec<usize>, Option<usize>, Option<HeadDefect>) {
        let mut scan = HeadScan::new(text, from);
        let mut got = Vec::new();
        let mut buf = [0usize; 3];
        loop {
            let n = scan.fill(&mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        (got, scan.end(), scan.defect())
    }

    /// The same found by looking at one byte at a time.
    fn plain(text: &[u8], from: usize) -> (Vec<usize>, Option<usize>, Option<HeadDefect>) {
        let mut got = Vec::new();
        let mut line_start = from;
        let mut end = None;
        for i in from..text.len() {
            if text[i] == b'\n' {
                got.push(i);
                let line = &text[line_start..i];
                line_start = i + 1;
                if line.is_empty() || line == b"\r" {
                    end = Some(i + 1);
                    break;
                }
            }
        }
        let part = &text[from..end.unwrap_or(text.len())];
        let bare = (0..part.len()).any(|i| part[i] == b'\r' && part.get(i + 1) != Some(&b'\n'));
        let defect = if bare {
            Some(HeadDefect::BareCr)
        } else if !part.is_ascii() {
            Some(HeadDefect::NonAscii)
        } else {
            None
        };
        (got, end, defect)
    }

    #[test]
    fn scan_agrees_with_a_byte_by_byte_search() {
        let mut texts = vec![sample(b'x'), sample(0xc3), b"ab\r\n".repeat(40)];
        let mut bare = sample(b'x');
        bare[700] = b'\r';
        texts.push(bare);
        // An empty line in the middle ends the section; what follows is body.
        let mut with_body = sample(b'x');
        with_body.splice(500..500, b"\r\n\r\n\xff\rbody".iter().copied());
        texts.push(with_body);
        // The empty line ends on a block's last byte, and a bare CR follows in the body.
        let mut at_edge = vec![b'a'; BLOCK - 3];
        at_edge.extend_from_slice(b"\r\n\n\rxx\rbody");
        assert_eq!(at_edge[BLOCK - 1], b'\n');
        texts.push(at_edge);
        let mut lf_only = sample(b'x');
        lf_only.splice(333..333, b"\n\n\r".iter().copied());
        texts.push(lf_only);
        for text in &texts {
            for from in 0..text.len().min(40) {
                assert_eq!(scan_all(text, from), plain(text, from), "from {from}");
            }
        }
    }

    #[test]
    fn vector_and_scalar_masks_agree() {
        let text = sample(0xc3);
        for block in text.chunks_exact(BLOCK) {
            let block: &[u8; BLOCK] = block.try_into().unwrap();
            let (v, s) = (masks(block), masks_scalar(block));
            assert_eq!((v.lf, v.cr, v.high), (s.lf, s.cr, s.high));
        }
    }
}
