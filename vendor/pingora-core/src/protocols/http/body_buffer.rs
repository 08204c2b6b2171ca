// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use bytes::{Bytes, BytesMut};
use std::sync::Mutex;

/// A buffer with size limit. When the total amount of data written to the buffer is below the limit
/// all the data will be held in the buffer. Otherwise, the buffer will report to be truncated.
///
/// BluesMinds: the chunks are kept as they were read (shared, not copied) and
/// joined into one the first time the buffer is taken, which then replaces
/// them, so a pre-read body lives in memory once however often it is replayed.
pub struct FixedBuffer {
    chunks: Mutex<Vec<Bytes>>,
    len: usize,
    capacity: usize,
    truncated: bool,
}

impl FixedBuffer {
    pub fn new(capacity: usize) -> Self {
        FixedBuffer {
            chunks: Mutex::new(Vec::new()),
            len: 0,
            capacity,
            truncated: false,
        }
    }

    pub fn write_to_buffer(&mut self, data: &Bytes) {
        if self.truncated {
            return;
        }

        let chunks = self.chunks.get_mut().expect("retry buffer lock");
        if self.len + data.len() <= self.capacity {
            chunks.push(data.clone());
            self.len += data.len();
        } else {
            // Buffered data is no longer usable for a retry, so release its allocation.
            *chunks = Vec::new();
            self.len = 0;
            self.truncated = true;
        }
    }

    pub fn clear(&mut self) {
        self.truncated = false;
        self.len = 0;
        self.chunks.get_mut().expect("retry buffer lock").clear();
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
    pub fn get_buffer(&self) -> Option<Bytes> {
        // TODO: return None if truncated?
        if self.is_empty() {
            return None;
        }
        let mut chunks = self.chunks.lock().expect("retry buffer lock");
        if chunks.len() > 1 {
            let mut joined = BytesMut::with_capacity(self.len);
            for chunk in chunks.iter() {
                joined.extend_from_slice(chunk);
            }
            *chunks = vec![joined.freeze()];
        }
        chunks.first().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_storage_when_truncated() {
        let mut buffer = FixedBuffer::new(4);
        buffer.write_to_buffer(&Bytes::from_static(b"12"));
        buffer.write_to_buffer(&Bytes::from_static(b"34"));
        assert_eq!(buffer.get_buffer().unwrap(), Bytes::from_static(b"1234"));
        // Joined once: later takes share that allocation.
        let (a, b) = (buffer.get_buffer().unwrap(), buffer.get_buffer().unwrap());
        assert_eq!(a.as_ptr(), b.as_ptr());

        buffer.write_to_buffer(&Bytes::from_static(b"5"));

        assert!(buffer.is_truncated());
        assert!(buffer.chunks.lock().unwrap().is_empty());
        assert!(buffer.get_buffer().is_none());
    }
}
