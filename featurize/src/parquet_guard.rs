//! A Parquet source that refuses to be read past its end over and over.
//!
//! parquet 60.1 skips unknown Thrift fields by looping over a list's declared length, and its
//! stream reader skips bytes with `io::copy` from a `Take`, which returns `Ok(0)` at the end
//! of the input instead of an error. A damaged page header that declares a list of 2^31
//! doubles therefore costs 2^31 `read` calls at end of file — minutes of a stuck load (found
//! by fuzzing `load_parquet`, scripts/fuzz.sh). Legitimate reads meet the end of the file at
//! most a few times, so a reader that errors after a handful of empty reads ends that loop
//! without changing what an intact file gives.

use std::fs::File;
use std::io::{self, BufReader, Read};

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, Length};

/// Empty reads at end of file tolerated before the reader errors.
const MAX_EMPTY_READS: u32 = 16;

pub(crate) struct GuardedFile(pub(crate) File);

impl Length for GuardedFile {
    fn len(&self) -> u64 {
        Length::len(&self.0)
    }
}

impl ChunkReader for GuardedFile {
    type T = EofGuard<BufReader<File>>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(EofGuard { inner: self.0.get_read(start)?, empty_reads: 0 })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.0.get_bytes(start, length)
    }
}

pub(crate) struct EofGuard<R> {
    inner: R,
    empty_reads: u32,
}

impl<R: Read> Read for EofGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.empty_reads += 1;
            if self.empty_reads > MAX_EMPTY_READS {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a page header reads past the end of the file",
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_through_and_endless_reads_at_the_end_fail() {
        let mut r = EofGuard { inner: &b"abc"[..], empty_reads: 0 };
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        for _ in 0..MAX_EMPTY_READS {
            assert_eq!(r.read(&mut buf).unwrap(), 0);
        }
        assert_eq!(r.read(&mut buf).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // A zero-length read is not a read at the end.
        let mut r = EofGuard { inner: &b""[..], empty_reads: 0 };
        for _ in 0..100 {
            assert_eq!(r.read(&mut []).unwrap(), 0);
        }
    }
}
