//! Cutting a big chunk into pieces at record boundaries, so that several COPY connections can
//! load one chunk at once (each piece is validated and committed on its own, see the engine's
//! `pieces` module).
//!
//! A cut is placed right after a line feed that is outside any quoted field, which is where a
//! record ends: quotes are followed by parity, as RFC 4180 quoting (and simd-csv's tokenizer)
//! reads them: every quote (the dataset's quote character) opens or closes a quoted field, and
//! an escaped doubled quote does both. A
//! malformed quote therefore shifts the parity for the rest of the chunk exactly as it does for
//! the tokenizer, which reads the rest as one quoted field; no cut falls inside it. Each piece
//! knows the physical line it starts on, so rows keep their line numbers within the chunk.

use std::io::{self, Read};

/// One piece of a chunk: bytes `start..end`, starting on physical line `first_line` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub end: u64,
    pub first_line: i32,
}

const READ_BUFFER: usize = 256 << 10;

/// Cuts `input` (`len` bytes) into `ceil(len / max_piece)` pieces of about equal size, each
/// ending at a record boundary; fewer when records are longer than a piece (a piece may hold a
/// single huge record) or the quoting leaves no boundary. One piece when `len <= max_piece`.
/// `quote` is the dataset's quote character (an ASCII byte, so the same byte in every encoding
/// the datasets use).
pub fn cut<R: Read>(mut input: R, len: u64, max_piece: u64, quote: u8) -> io::Result<Vec<Piece>> {
    let max_piece = max_piece.max(1);
    let count = len.div_ceil(max_piece).max(1);
    // Where each piece should end at the earliest: cut at the first boundary at or after it.
    let targets: Vec<u64> = (1..count).map(|k| len * k / count).collect();
    let mut pieces = Vec::with_capacity(count as usize);
    let (mut start, mut start_line) = (0u64, 1i64);
    let (mut in_quotes, mut lines) = (false, 1i64);
    let mut next = 0;
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut offset = 0u64;
    while next < targets.len() {
        let read = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        for at in memchr::memchr2_iter(quote, b'\n', &buffer[..read]) {
            if buffer[at] == quote {
                in_quotes = !in_quotes;
                continue;
            }
            lines += 1;
            let end = offset + at as u64 + 1;
            if in_quotes || next >= targets.len() || end < targets[next] {
                continue;
            }
            if end < len {
                pieces.push(piece(start, end, start_line)?);
                (start, start_line) = (end, lines);
            }
            // Past every target this boundary reached (records longer than a piece).
            while next < targets.len() && targets[next] <= end {
                next += 1;
            }
        }
        offset += read as u64;
    }
    pieces.push(piece(start, len, start_line)?);
    Ok(pieces)
}

fn piece(start: u64, end: u64, first_line: i64) -> io::Result<Piece> {
    let first_line = i32::try_from(first_line).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "more lines than a chunk may hold",
        )
    })?;
    Ok(Piece {
        start,
        end,
        first_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &[u8], max: u64) -> Vec<(String, i32)> {
        cut(text, text.len() as u64, max, b'"')
            .unwrap()
            .into_iter()
            .map(|p| {
                let bytes = &text[p.start as usize..p.end as usize];
                (String::from_utf8_lossy(bytes).into_owned(), p.first_line)
            })
            .collect()
    }

    #[test]
    fn a_small_chunk_is_one_piece() {
        assert_eq!(pieces(b"a\nb\n", 100), vec![("a\nb\n".into(), 1)]);
        assert_eq!(pieces(b"", 100), vec![("".into(), 1)]);
    }

    #[test]
    fn cuts_fall_after_line_ends_and_number_the_lines() {
        let text = b"h\n111\n222\n333\n444\n";
        assert_eq!(
            pieces(text, 8),
            vec![
                ("h\n111\n".into(), 1),
                ("222\n333\n".into(), 3),
                ("444\n".into(), 5)
            ]
        );
        // Three targets: 6, 12, 18 bytes.
        assert_eq!(pieces(b"h\n111\n222\n333\n444\n555\n666\n", 7).len(), 4);
    }

    #[test]
    fn no_cut_inside_quotes_and_escaped_quotes_keep_the_parity() {
        let text = b"a,\"x\ny\ny\ny\",1\nb,\"\"\"q\"\"\n\",2\nc,3\n";
        let got = pieces(text, 4);
        let joined: String = got.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(joined.as_bytes(), text);
        for (piece, _) in &got {
            assert_eq!(
                piece.matches('"').count() % 2,
                0,
                "{piece:?} is cut inside quotes"
            );
        }
        assert_eq!(got[0].0, "a,\"x\ny\ny\ny\",1\n");
        assert_eq!(got[1], ("b,\"\"\"q\"\"\n\",2\n".into(), 5));
        assert_eq!(got[2], ("c,3\n".into(), 7));
    }

    #[test]
    fn an_unterminated_quote_leaves_the_rest_in_one_piece() {
        let text = b"a\nb,\"open\nc\nd\ne\nf\n";
        let got = pieces(text, 2);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got.last().unwrap().0, "b,\"open\nc\nd\ne\nf\n", "{got:?}");
    }

    #[test]
    fn a_last_line_without_newline_ends_the_last_piece() {
        let got = pieces(b"1111\n2222\n3333", 5);
        assert_eq!(
            got,
            vec![
                ("1111\n".into(), 1),
                ("2222\n".into(), 2),
                ("3333".into(), 3)
            ]
        );
    }
}
