//! `RedisLog`: the event log as a Redis Stream (`XADD` to append, `XRANGE` to replay), one
//! stream per coordinator. How durable an append is follows the server's own settings
//! (`appendonly yes` + `appendfsync always` for the guarantee the file log gives).
//!
//! The log thread is synchronous, so this uses the blocking client: one connection, a
//! `MULTI`/`EXEC` pipeline per batch (one round trip however many records, and a batch lands
//! whole or not at all).
//!
//! Redis restarting: a failed append marks the connection broken and returns a transient error;
//! the server retries the same batch (`grpc::log_thread`). The retry reconnects and compares
//! `XLEN` with the records made durable so far: equal, the batch never landed and is sent again;
//! equal plus the batch, it landed before the answer was lost and is not sent twice; anything
//! else means the server lost acknowledged writes (`LogError::Diverged`).

use std::time::Duration;

use redis::Value;

use crate::log::{EventLog, LogError, MAX_RECORD};

pub struct RedisLog {
    /// For logs and errors only: the password is replaced (see [`redact_url`]).
    url: String,
    key: String,
    client: redis::Client,
    con: Option<redis::Connection>,
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
/// A Redis that accepts the connection but never answers fails the append after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// `url` with its password (`redis://user:PASSWORD@host`, `redis://:PASSWORD@host`) replaced
/// by `***`, for logs and errors: a Redis URL may carry the password.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

impl RedisLog {
    /// Connects to `url` (`redis://host:port/db`); the stream is `quarry:<name>:events`.
    pub fn open(url: &str, name: &str) -> Result<RedisLog, LogError> {
        let err = |message: String| LogError::Redis { url: redact_url(url), message };
        let client = redis::Client::open(url).map_err(|e| err(e.to_string()))?;
        let con = connect(&client).map_err(|e| err(format!("cannot connect: {e}")))?;
        Ok(RedisLog {
            url: redact_url(url),
            key: format!("quarry:{name}:events"),
            client,
            con: Some(con),
            seq: 0,
        })
    }

    /// The open connection, reconnecting when the last call broke it.
    fn connection(&mut self) -> Result<&mut redis::Connection, LogError> {
        if self.con.is_none() {
            let con = connect(&self.client).map_err(|e| self.err(format!("cannot reconnect: {e}")))?;
            self.con = Some(con);
        }
        self.con
            .as_mut()
            .ok_or_else(|| LogError::Redis { url: self.url.clone(), message: "no connection".into() })
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
        pipe.atomic();
        for r in records {
            if r.len() > MAX_RECORD {
                return Err(LogError::TooLarge {
                    path: self.key.clone().into(),
                    offset: 0,
                    len: r.len() as u64,
                    max: MAX_RECORD as u64,
                });
            }
            pipe.cmd("XADD").arg(&self.key).arg("*").arg(FIELD).arg(r.as_slice());
        }
        let reconnecting = self.con.is_none();
        let key = self.key.clone();
        let (seq, n) = (self.seq, records.len() as u64);
        let result = (|| {
            let con = self.connection()?;
            if reconnecting {
                let len: u64 = redis::cmd("XLEN")
                    .arg(&key)
                    .query(con)
                    .map_err(|e| LogError::Redis { url: String::new(), message: e.to_string() })?;
                if len == seq + n {
                    return Ok(false);
                }
                if len != seq {
                    return Err(LogError::Diverged {
                        log: key.clone(),
                        message: format!(
                            "the stream holds {len} records but {seq} were made durable: Redis lost acknowledged writes (is appendonly on?) or another writer uses this stream"
                        ),
                    });
                }
            }
            let _: Vec<String> = pipe
                .query(con)
                .map_err(|e| LogError::Redis { url: String::new(), message: e.to_string() })?;
            Ok(true)
        })();
        match result {
            Ok(sent) => {
                if reconnecting {
                    tracing::info!(url = %self.url, resent = sent, "redis event log: reconnected");
                }
                self.seq += n;
                Ok(self.seq)
            }
            Err(LogError::Redis { message, .. }) => {
                self.con = None;
                Err(self.err(message))
            }
            Err(e) => Err(e),
        }
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
                .query(self.connection()?)
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
