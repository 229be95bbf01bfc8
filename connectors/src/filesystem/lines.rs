//! Cutting a byte stream into chunks of whole lines, in linear time.
//!
//! Bytes arrive in pieces of any size (what the object store returns). Each
//! byte is scanned for newlines once (memchr); a chunk of up to `lines`
//! complete lines is split off the buffer without copying, and carries the
//! number of its first line, so that a bad line's location can be made
//! when, and only when, the line is bad.

use bytes::{Bytes, BytesMut};

/// Whole lines cut from a file, newlines included (but for a last line
/// without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineChunk {
    pub bytes: Bytes,
    /// The number (from 1) of the chunk's first line in the file.
    pub first_line: u64,
    /// How many lines the chunk holds.
    pub lines: u64,
}

/// Buffers bytes and cuts them into [`LineChunk`]s.
#[derive(Debug)]
pub struct LineSplitter {
    buffer: BytesMut,
    /// Bytes of `buffer` already scanned for newlines.
    scanned: usize,
    /// Complete lines found in the scanned part, and where the last ends.
    complete: u64,
    cut: usize,
    /// Lines taken from the file so far.
    taken: u64,
    /// Lines still to drop before the first chunk (read before a restored
    /// checkpoint, or a CSV header).
    skip: u64,
    /// Lines per chunk.
    chunk_lines: u64,
}

impl LineSplitter {
    pub fn new(chunk_lines: usize, skip: u64) -> Self {
        LineSplitter {
            buffer: BytesMut::new(),
            scanned: 0,
            complete: 0,
            cut: 0,
            taken: 0,
            skip,
            chunk_lines: chunk_lines.max(1) as u64,
        }
    }

    /// Appends bytes read from the file.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet cut.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Lines cut so far (skipped ones included): how far the file is read.
    pub fn lines_taken(&self) -> u64 {
        self.taken
    }

    /// Scans the new bytes until `wanted` complete lines are known.
    fn scan(&mut self, wanted: u64) {
        if self.complete >= wanted {
            return;
        }
        for i in memchr::memchr_iter(b'\n', &self.buffer[self.scanned..]) {
            self.complete += 1;
            self.cut = self.scanned + i + 1;
            if self.complete == wanted {
                self.scanned = self.cut;
                return;
            }
        }
        self.scanned = self.buffer.len();
    }

    /// Splits off the first `complete` lines found (ending at `cut`).
    fn split(&mut self) -> LineChunk {
        let bytes = self.buffer.split_to(self.cut).freeze();
        self.scanned -= self.cut;
        let chunk = LineChunk {
            bytes,
            first_line: self.taken + 1,
            lines: self.complete,
        };
        self.taken += self.complete;
        self.complete = 0;
        self.cut = 0;
        chunk
    }

    /// Drops the lines still to skip, as far as they are buffered.
    fn drop_skipped(&mut self) {
        while self.skip > 0 {
            self.scan(self.skip);
            if self.complete == 0 {
                return;
            }
            let dropped = self.split();
            self.skip -= dropped.lines;
        }
    }

    /// The next chunk of `chunk_lines` complete lines, if buffered.
    pub fn next_chunk(&mut self) -> Option<LineChunk> {
        self.drop_skipped();
        if self.skip > 0 {
            return None;
        }
        self.scan(self.chunk_lines);
        (self.complete == self.chunk_lines).then(|| self.split())
    }

    /// At the end of the file: what is left, a last line without a newline
    /// included; `None` when nothing is.
    pub fn finish(&mut self) -> Option<LineChunk> {
        if let Some(chunk) = self.next_chunk() {
            return Some(chunk);
        }
        self.scan(u64::MAX);
        if self.skip > 0 {
            // A file shorter than what was read before: nothing is left.
            self.buffer.clear();
            self.scanned = 0;
            self.complete = 0;
            self.cut = 0;
            return None;
        }
        if self.buffer.len() > self.cut {
            // The last line has no newline.
            self.complete += 1;
            self.cut = self.buffer.len();
        }
        (self.complete > 0).then(|| self.split())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every chunk of `text` fed in pieces of `piece` bytes.
    fn chunks(text: &[u8], piece: usize, lines: usize, skip: u64) -> Vec<LineChunk> {
        let mut splitter = LineSplitter::new(lines, skip);
        let mut out = Vec::new();
        for part in text.chunks(piece.max(1)) {
            splitter.push(part);
            while let Some(c) = splitter.next_chunk() {
                out.push(c);
            }
        }
        while let Some(c) = splitter.finish() {
            out.push(c);
        }
        out
    }

    #[test]
    fn lines_are_cut_whole_and_numbered() {
        let text = b"a\nbb\n\nccc\nd";
        let got = chunks(text, 3, 2, 0);
        let texts: Vec<&[u8]> = got.iter().map(|c| c.bytes.as_ref()).collect();
        assert_eq!(texts, vec![&b"a\nbb\n"[..], b"\nccc\n", b"d"]);
        let numbers: Vec<(u64, u64)> = got.iter().map(|c| (c.first_line, c.lines)).collect();
        assert_eq!(numbers, vec![(1, 2), (3, 2), (5, 1)]);
    }

    #[test]
    fn skipped_lines_are_dropped_and_numbering_continues() {
        let got = chunks(b"1\n2\n3\n4\n5\n", 1, 2, 3);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bytes.as_ref(), b"4\n5\n");
        assert_eq!(got[0].first_line, 4);
        // A file shorter than the lines to skip gives nothing.
        assert!(chunks(b"1\n2\n", 4, 8, 5).is_empty());
    }

    proptest! {
        /// Any piece size and chunk size: the chunks put back together are
        /// the text after the skipped lines, each chunk is whole lines, and
        /// line numbers follow on.
        #[test]
        fn any_pieces_give_the_same_lines(
            lines in proptest::collection::vec("[a-z{}\" ]{0,12}", 0..40),
            trailing_newline in any::<bool>(),
            piece in 1usize..64,
            chunk_lines in 1usize..9,
            skip in 0u64..5,
        ) {
            let mut text = lines.join("\n");
            if trailing_newline && !lines.is_empty() {
                text.push('\n');
            }
            let got = chunks(text.as_bytes(), piece, chunk_lines, skip);
            let joined: Vec<u8> = got.iter().flat_map(|c| c.bytes.iter().copied()).collect();
            let total = if text.is_empty() { 0 } else { text.split_inclusive('\n').count() as u64 };
            let expected: String = text.split_inclusive('\n').skip(skip as usize).collect();
            prop_assert_eq!(String::from_utf8(joined).unwrap(), expected);
            let mut next = skip + 1;
            for c in &got {
                prop_assert_eq!(c.first_line, next);
                prop_assert!(c.lines as usize <= chunk_lines);
                let newlines = c.bytes.iter().filter(|b| **b == b'\n').count() as u64;
                prop_assert!(newlines == c.lines || newlines + 1 == c.lines);
                next += c.lines;
            }
            if total > skip {
                prop_assert_eq!(next - 1, total);
            } else {
                prop_assert!(got.is_empty());
            }
        }
    }
}
