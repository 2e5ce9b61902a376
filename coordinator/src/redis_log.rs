//! `RedisLog`: the event log as a Redis Stream (`XADD` to append, `XRANGE` to replay), one
//! stream per coordinator. How durable an append is follows the server's own settings
//! (`appendonly yes` + `appendfsync always` for the guarantee the file log gives).
//!
//! The log thread is synchronous, so this uses the blocking client: one connection, a
//! pipeline per batch (one round trip however many records).

use redis::Value;

use crate::log::{EventLog, LogError, MAX_RECORD};

pub struct RedisLog {
    url: String,
    key: String,
    con: redis::Connection,
    seq: u64,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("seq", &self.seq)
            .finish()
    }
}

const FIELD: &str = "e";
const PAGE: usize = 10_000;

impl RedisLog {
    /// Connects to `url` (`redis://host:port/db`); the stream is `quarry:<name>:events`.
    pub fn open(url: &str, name: &str) -> Result<RedisLog, LogError> {
        let err = |message: String| LogError::Redis { url: url.to_string(), message };
        let client = redis::Client::open(url).map_err(|e| err(e.to_string()))?;
        let con = client.get_connection().map_err(|e| err(format!("cannot connect: {e}")))?;
        Ok(RedisLog { url: url.to_string(), key: format!("quarry:{name}:events"), con, seq: 0 })
    }

    fn err(&self, e: impl std::fmt::Display) -> LogError {
        LogError::Redis { url: self.url.clone(), message: e.to_string() }
    }
}

fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}

impl EventLog for RedisLog {
    fn append_batch(&mut self, records: &[Vec<u8>]) -> Result<u64, LogError> {
        let mut pipe = redis::pipe();
        for r in records {
            if r.len() > MAX_RECORD {
                return Err(self.err(format!("a record of {} bytes is over the {MAX_RECORD} limit", r.len())));
            }
            pipe.cmd("XADD").arg(&self.key).arg("*").arg(FIELD).arg(r.as_slice());
        }
        let _: Vec<String> = pipe.query(&mut self.con).map_err(|e| self.err(e))?;
        self.seq += records.len() as u64;
        Ok(self.seq)
    }

    fn replay(&mut self) -> Result<Vec<Vec<u8>>, LogError> {
        let mut out = Vec::new();
        let mut start = "-".to_string();
        loop {
            let page: Value = redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query(&mut self.con)
                .map_err(|e| self.err(e))?;
            let Value::Array(entries) = page else { return Err(self.err("XRANGE did not answer an array")) };
            let n = entries.len();
            let mut last_id = None;
            for entry in entries {
                let Value::Array(parts) = entry else {
                    return Err(self.err("a stream entry is not an array"));
                };
                let (Some(id), Some(Value::Array(fields))) = (parts.first().and_then(bulk), parts.get(1))
                else {
                    return Err(self.err("a stream entry has no id or fields"));
                };
                let payload = fields
                    .chunks(2)
                    .find(|kv| kv.first().and_then(bulk) == Some(FIELD.as_bytes()))
                    .and_then(|kv| kv.get(1).and_then(bulk))
                    .ok_or_else(|| self.err("a stream entry has no event field"))?;
                out.push(payload.to_vec());
                last_id = Some(String::from_utf8_lossy(id).into_owned());
            }
            match last_id {
                // Exclusive start: the next page begins after the last id seen.
                Some(id) if n == PAGE => start = format!("({id}"),
                _ => break,
            }
        }
        self.seq = out.len() as u64;
        Ok(out)
    }
}
