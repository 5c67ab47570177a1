//! A reader that decompresses ahead on its own thread.
//!
//! Reading a layer blob is two kinds of work: inflating it (gzip inflates at about half the
//! speed zstd does, and most base images are gzip) and using what comes out (hashing the tar
//! stream for its diff_id, parsing entries, hashing file contents). In one thread they add up;
//! with [`ReadAhead`] the inflating runs on a second core while the caller uses the previous
//! chunks, so a layer costs about the larger of the two, not their sum. Measured on the fleet
//! scenario's 120 MB Debian base (gzip): see docs/read-set.md, "Cost".
//!
//! The bytes are the same bytes in the same order: only where the work runs changes. Nothing
//! here can reach a key or a layer.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};

/// Bytes handed over per message: large enough that the channel costs nothing per byte, small
/// enough that `DEPTH` chunks in flight stay a small, bounded amount of memory.
const CHUNK: usize = 256 << 10;
/// Chunks the producer may be ahead of the consumer.
const DEPTH: usize = 4;

/// Reads `inner` on a spawned thread, [`CHUNK`] bytes at a time, at most [`DEPTH`] chunks
/// ahead of the caller. An error of `inner` reaches the caller at the point of the stream where
/// it happened. Dropping the reader stops the thread at its next chunk.
pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    /// Returns emptied buffers to the producer, so steady state allocates nothing.
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    /// Starts reading `inner` ahead. When no thread can be spawned (a process at its thread
    /// limit), the error is the caller's to report.
    pub fn new(mut inner: Box<dyn Read + Send>) -> io::Result<ReadAhead> {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(DEPTH);
        let (back, spare) = mpsc::sync_channel::<Vec<u8>>(DEPTH + 2);
        std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn(move || loop {
                let mut buf = spare.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let (n, err) = fill(&mut inner, &mut buf);
                buf.truncate(n);
                // The bytes before an error first, then the error; a closed channel means the
                // reader was dropped: stop.
                if n > 0 && tx.send(Ok(buf)).is_err() {
                    return;
                }
                match err {
                    Some(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    None if n == 0 => return,
                    None => {}
                }
            })?;
        Ok(ReadAhead {
            rx,
            back,
            cur: Vec::new(),
            pos: 0,
            done: false,
        })
    }
}

/// Reads into `buf` until it is full, `r` ends or fails; retries interrupted reads. Returns
/// how many bytes it read, and the error that stopped it.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.cur, chunk);
                    // The producer may have stopped; a buffer it never takes back is just freed.
                    let _ = self.back.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The producer ended: the stream is whole.
                Err(mpsc::RecvError) => self.done = true,
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that yields `data` in odd-sized pieces and then, optionally, an error.
    struct Jagged {
        data: Vec<u8>,
        at: usize,
        fail: bool,
    }

    impl Read for Jagged {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                return if self.fail {
                    Err(io::Error::other("broken stream"))
                } else {
                    Ok(0)
                };
            }
            let n = buf.len().min(7919).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn yields_the_same_bytes_in_the_same_order() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK * DEPTH + 17] {
            let d = data(len);
            let mut r = ReadAhead::new(Box::new(Jagged {
                data: d.clone(),
                at: 0,
                fail: false,
            }))
            .unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, d, "length {len}");
            // After the end, still the end.
            assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
        }
    }

    #[test]
    fn an_error_arrives_after_the_bytes_before_it() {
        let d = data(2 * CHUNK + 5);
        let mut r = ReadAhead::new(Box::new(Jagged {
            data: d.clone(),
            at: 0,
            fail: true,
        }))
        .unwrap();
        let mut got = vec![0u8; d.len()];
        r.read_exact(&mut got).unwrap();
        assert_eq!(got, d);
        let e = r.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.to_string(), "broken stream");
    }

    #[test]
    fn dropping_the_reader_early_stops_the_producer() {
        let d = data(64 * CHUNK);
        let mut r = ReadAhead::new(Box::new(Jagged {
            data: d,
            at: 0,
            fail: false,
        }))
        .unwrap();
        let mut first = [0u8; 100];
        r.read_exact(&mut first).unwrap();
        drop(r);
        // Nothing to assert on the thread directly: this must neither hang nor panic.
    }
}
