//! `RedisLog`: the event log as a Redis Stream (`XADD` to append, `XRANGE` to replay), one
//! stream per coordinator.
//!
//! The log thread is synchronous, so this uses the blocking client: one connection, a
//! `MULTI`/`EXEC` pipeline per batch (one round trip however many records, and a batch lands
//! whole or not at all).
//!
//! Durability is checked, not assumed ([`RedisLog::check_durability`]): `appendonly yes`,
//! `appendfsync always` (or `everysec` where `WAITAOF` exists, Redis 7.2+, which is then sent
//! after every batch so the answer waits for the fsync), and `maxmemory-policy noeviction`.
//!
//! Entry ids are the records' sequence numbers (`<seq>-0`), so Redis itself refuses a
//! duplicate or an out-of-order append (another writer), and replay refuses a gap.
//!
//! Redis restarting: a failed append marks the connection broken and returns a transient error;
//! the server retries the same batch (`grpc::log_thread`). The retry reconnects and compares
//! `XLEN` with the records made durable so far: equal, the batch never landed and is sent again;
//! equal plus the batch, it landed before the answer was lost and is not sent twice; anything
//! else means the server lost acknowledged writes (`LogError::Diverged`).
//!
//! Snapshots: the state at sequence N is `SET` in `quarry:<name>:snapshot` (checksummed) and
//! the stream `XTRIM`med below N + 1 in one `MULTI`/`EXEC`, so no crash separates them;
//! recovery reads the snapshot and the entries after N, and `XLEN` checks count the trimmed
//! entries.
//!
//! Ownership: [`RedisLog::claim`] takes the owner key (`SET NX` with a short expiry, renewed by
//! [`EventLog::keep_alive`]), so a second coordinator on another host is refused naming the
//! holder; the epoch key keeps the lease-token epoch (`state::epoch_of`).

use std::time::Duration;

use redis::Value;

use crate::log::{EventLog, LogError, MAX_RECORD, Recovered, decode_snapshot, encode_snapshot};
use crate::owner::{EpochRecord, Owner, StoreLock};

pub struct RedisLog {
    /// For logs and errors only: the password is replaced (see [`redact_url`]).
    url: String,
    /// `quarry:<name>`; the stream is `<base>:events`.
    base: String,
    key: String,
    client: redis::Client,
    con: Option<redis::Connection>,
    seq: u64,
    /// Send `WAITAOF 1 0` after each batch (Redis 7.2+ with appendonly on).
    wait_aof: bool,
    /// The owner key's value while this log holds it.
    owner: Option<String>,
    /// Entries below the snapshot that `XTRIM` removed: `XLEN` + this = the records written.
    trimmed: u64,
    /// Keep entries a snapshot covers instead of trimming them (the fault campaign reads the
    /// whole stream).
    keep_rotated: bool,
    /// Set by every reconnect: the next append first checks that the stream still holds every
    /// record made durable (a Redis restarted without its data would otherwise take the next
    /// ids and hide the gap).
    verify: bool,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("seq", &self.seq)
            .field("wait_aof", &self.wait_aof)
            .finish()
    }
}

const FIELD: &str = "e";
const PAGE: usize = 10_000;
/// A Redis that accepts the connection but never answers fails the append after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The owner key lapses this long after its coordinator stops renewing it (every
/// `log::KEEP_ALIVE`).
pub const OWNER_TTL: Duration = Duration::from_secs(15);
/// How long an append waits for the append-only file's fsync (`WAITAOF`).
const AOF_WAIT_MS: u64 = 5_000;

/// Sets the owner key to `ARGV[1]` when it holds `ARGV[2]` (a takeover) or nothing.
const TAKE_OVER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0";

/// Renews the owner key while it holds `ARGV[1]`, or takes it back when it lapsed (Redis was
/// down longer than the expiry); 0 when another coordinator holds it.
const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// A Redis version `major.minor` from `INFO server`.
fn redis_version(info: &str) -> Option<(u32, u32)> {
    let v = info.lines().find_map(|l| l.strip_prefix("redis_version:"))?.trim();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Whether a failed command is Redis refusing an entry id (a duplicate or out-of-order
/// append): the stream is not what this log wrote, and retrying cannot fix it.
fn is_id_refusal(e: &redis::RedisError) -> bool {
    e.to_string().contains("equal or smaller than the target stream top item")
}

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
            base: format!("quarry:{name}"),
            key: format!("quarry:{name}:events"),
            client,
            con: Some(con),
            seq: 0,
            wait_aof: false,
            owner: None,
            trimmed: 0,
            keep_rotated: false,
            verify: false,
        })
    }

    /// Keep the entries a snapshot covers in the stream instead of trimming them.
    pub fn keep_rotated(&mut self, keep: bool) {
        self.keep_rotated = keep;
    }

    fn snapshot_key(&self) -> String {
        format!("{}:snapshot", self.base)
    }

    /// Which log this is, for the store's epoch record: the redacted URL and the stream.
    pub fn id(&self) -> String {
        format!("{} {}", self.url, self.key)
    }

    /// Checks that an acknowledged append survives Redis crashing: `appendonly yes`,
    /// `appendfsync always` (or `everysec` with `WAITAOF`, Redis 7.2+), `maxmemory-policy
    /// noeviction`. A failing check is an [`LogError::Unsafe`] error, or with `allow_unsafe` a
    /// loud warning per problem. Returns the problems found.
    pub fn check_durability(&mut self, allow_unsafe: bool) -> Result<Vec<String>, LogError> {
        let con = self.connection()?;
        let info: Result<String, _> = redis::cmd("INFO").arg("server").query(con);
        let version = info.as_deref().ok().and_then(redis_version);
        let mut config = |name: &str| -> Result<String, String> {
            let map: std::collections::HashMap<String, String> =
                redis::cmd("CONFIG").arg("GET").arg(name).query(con).map_err(|e| e.to_string())?;
            map.get(name).cloned().ok_or_else(|| format!("CONFIG GET {name} answered nothing"))
        };
        let (appendonly, fsync, policy) =
            (config("appendonly"), config("appendfsync"), config("maxmemory-policy"));
        let has_wait_aof = version.is_some_and(|v| v >= (7, 2));
        let mut problems = Vec::new();
        match appendonly.as_deref() {
            Ok("yes") => {}
            Ok(v) => problems.push(format!(
                "appendonly is {v}, so a restart loses every change since the last snapshot (set appendonly yes)"
            )),
            Err(e) => problems.push(format!("cannot read appendonly ({e})")),
        }
        match (fsync.as_deref(), has_wait_aof) {
            (Ok("always"), _) | (Ok("everysec"), true) => {}
            (Ok("everysec"), false) => problems.push(format!(
                "appendfsync is everysec and this Redis ({}) has no WAITAOF (7.2+), so a crash loses up to a second of acknowledged changes (set appendfsync always)",
                version.map_or("version unknown".into(), |(a, b)| format!("{a}.{b}"))
            )),
            (Ok(v), _) => problems.push(format!(
                "appendfsync is {v}, so a crash loses acknowledged changes (set appendfsync always)"
            )),
            (Err(e), _) => problems.push(format!("cannot read appendfsync ({e})")),
        }
        match policy.as_deref() {
            Ok("noeviction") => {}
            Ok(v) => problems.push(format!(
                "maxmemory-policy is {v}, so Redis may evict the event stream (set maxmemory-policy noeviction)"
            )),
            Err(e) => problems.push(format!("cannot read maxmemory-policy ({e})")),
        }
        self.wait_aof = has_wait_aof && appendonly.as_deref() == Ok("yes");
        if !has_wait_aof {
            tracing::info!(url = %self.url, "redis has no WAITAOF (7.2+): appends rely on appendfsync always");
        }
        if problems.is_empty() {
            return Ok(problems);
        }
        if !allow_unsafe {
            return Err(LogError::Unsafe { url: self.url.clone(), problems: problems.join("; ") });
        }
        for p in &problems {
            tracing::warn!(url = %self.url, "REDIS IS NOT DURABLE (--redis-unsafe): {p}");
        }
        Ok(problems)
    }

    /// Takes the owner key for `lock`'s coordinator, or fails naming the live coordinator that
    /// holds it. A holder with the same host and store is dead (it would hold the store's lock,
    /// which `lock` proves we do), so its key is taken over at once.
    ///
    /// Also compares the Redis epoch with the store's record: when the store says this Redis
    /// saw a later epoch than it now holds, Redis lost acknowledged writes; that refuses to
    /// start ([`LogError::Diverged`]) unless `allow_unsafe`. Returns the largest epoch either
    /// side knows, which the next run must pass.
    pub fn claim(&mut self, lock: &StoreLock, allow_unsafe: bool) -> Result<u64, LogError> {
        let me = lock.owner();
        let value = serde_json::to_string(me).unwrap_or_default();
        let owner_key = format!("{}:owner", self.base);
        let epoch_key = format!("{}:epoch", self.base);
        let ttl = OWNER_TTL.as_millis() as u64;
        let url = self.url.clone();
        let con = self.connection()?;
        let fail = |e: redis::RedisError| LogError::Redis { url: url.clone(), message: e.to_string() };
        let mut taken = false;
        for _ in 0..3 {
            let current: Option<String> = redis::cmd("GET").arg(&owner_key).query(con).map_err(fail)?;
            let holder = current.as_deref().and_then(|c| serde_json::from_str::<Owner>(c).ok());
            if let Some(h) = &holder
                && !(h.host == me.host && h.store == me.store)
            {
                return Err(LogError::Held {
                    what: format!("redis stream {} at {}", self.key, self.url),
                    holder: format!(
                        "{h}; its claim lapses {} s after that coordinator stops",
                        OWNER_TTL.as_secs()
                    ),
                });
            }
            let old = current.unwrap_or_default();
            let ok: i64 = redis::Script::new(TAKE_OVER)
                .key(&owner_key)
                .arg(&value)
                .arg(&old)
                .arg(ttl)
                .invoke(con)
                .map_err(fail)?;
            if ok == 1 {
                taken = true;
                break;
            }
        }
        if !taken {
            return Err(LogError::Held {
                what: format!("redis stream {} at {}", self.key, self.url),
                holder: "a coordinator that keeps changing the owner key".into(),
            });
        }
        self.owner = Some(value);
        let con = self.connection()?;
        let redis_epoch: Option<u64> = redis::cmd("GET").arg(&epoch_key).query(con).map_err(fail)?;
        let redis_epoch = redis_epoch.unwrap_or(0);
        let EpochRecord { epoch: stored, log } = lock.last_epoch();
        if *log == self.id() && redis_epoch < *stored {
            let message = format!(
                "redis holds lease epoch {redis_epoch} but this store recorded epoch {stored} for it: Redis lost acknowledged writes (restarted without appendonly?)"
            );
            if !allow_unsafe {
                return Err(LogError::Diverged {
                    log: self.key.clone(),
                    message: format!(
                        "{message}; the jobs it lost cannot be recovered; start with --redis-unsafe to go on with what Redis still holds"
                    ),
                });
            }
            tracing::warn!(url = %self.url, "REDIS LOST DATA (--redis-unsafe): {message}; going on with what it holds, under a new lease epoch");
        }
        Ok(redis_epoch.max(*stored))
    }

    /// Waits for the append-only file to hold everything written on this connection.
    fn wait_for_aof(con: &mut redis::Connection) -> Result<(), String> {
        let acks: Vec<i64> =
            redis::cmd("WAITAOF").arg(1).arg(0).arg(AOF_WAIT_MS).query(con).map_err(|e| e.to_string())?;
        if acks.first().copied().unwrap_or(0) < 1 {
            return Err(format!("WAITAOF: the append-only file was not fsynced within {AOF_WAIT_MS} ms"));
        }
        Ok(())
    }

    /// The open connection, reconnecting when the last call broke it.
    fn connection(&mut self) -> Result<&mut redis::Connection, LogError> {
        if self.con.is_none() {
            let con = connect(&self.client).map_err(|e| self.err(format!("cannot reconnect: {e}")))?;
            self.con = Some(con);
            self.verify = true;
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
        for (i, r) in records.iter().enumerate() {
            if r.len() > MAX_RECORD {
                return Err(LogError::TooLarge {
                    path: self.key.clone().into(),
                    offset: 0,
                    len: r.len() as u64,
                    max: MAX_RECORD as u64,
                });
            }
            // The id is the sequence number: Redis refuses it if the stream moved past it.
            let id = format!("{}-0", self.seq + i as u64 + 1);
            pipe.cmd("XADD").arg(&self.key).arg(id).arg(FIELD).arg(r.as_slice());
        }
        let reconnecting = self.con.is_none() || self.verify;
        let key = self.key.clone();
        let wait_aof = self.wait_aof;
        let (seq, n, trimmed) = (self.seq, records.len() as u64, self.trimmed);
        let transient = |e: redis::RedisError| {
            if is_id_refusal(&e) {
                LogError::Diverged {
                    log: key.clone(),
                    message: format!(
                        "redis refused entry ids {}..={}: the stream already holds them, so another writer uses it ({e})",
                        seq + 1,
                        seq + n
                    ),
                }
            } else {
                LogError::Redis { url: String::new(), message: e.to_string() }
            }
        };
        let result = (|| {
            let con = self.connection()?;
            let mut sent = true;
            if reconnecting {
                let len: u64 = redis::cmd("XLEN").arg(&key).query(con).map_err(transient)?;
                let len = len + trimmed;
                if len == seq + n {
                    sent = false;
                } else if len != seq {
                    return Err(LogError::Diverged {
                        log: key.clone(),
                        message: format!(
                            "the stream holds {len} records but {seq} were made durable: Redis lost acknowledged writes (is appendonly on?) or another writer uses this stream"
                        ),
                    });
                }
            }
            if sent {
                let _: Value = pipe.query(con).map_err(transient)?;
            }
            if wait_aof {
                Self::wait_for_aof(con).map_err(|message| LogError::Redis { url: String::new(), message })?;
            }
            Ok(sent)
        })();
        match result {
            Ok(sent) => {
                if reconnecting {
                    tracing::info!(url = %self.url, resent = sent, "redis event log: reconnected");
                }
                self.verify = false;
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

    fn set_epoch(&mut self, epoch: u64) -> Result<(), LogError> {
        let key = format!("{}:epoch", self.base);
        let wait_aof = self.wait_aof;
        let result = (|| {
            let con = self.connection()?;
            let fail = |e: String| LogError::Redis { url: String::new(), message: e };
            let () = redis::cmd("SET").arg(&key).arg(epoch).query(con).map_err(|e| fail(e.to_string()))?;
            if wait_aof {
                Self::wait_for_aof(con).map_err(fail)?;
            }
            Ok(())
        })();
        match result {
            Err(LogError::Redis { message, .. }) => {
                self.con = None;
                Err(self.err(message))
            }
            other => other,
        }
    }

    fn keep_alive(&mut self) -> Result<(), LogError> {
        let Some(value) = self.owner.clone() else { return Ok(()) };
        let owner_key = format!("{}:owner", self.base);
        let held: Result<i64, LogError> = self.connection().and_then(|con| {
            redis::Script::new(RENEW)
                .key(&owner_key)
                .arg(&value)
                .arg(OWNER_TTL.as_millis() as u64)
                .invoke(con)
                .map_err(|e| LogError::Redis { url: String::new(), message: e.to_string() })
        });
        match held {
            Ok(1) => Ok(()),
            Ok(_) => {
                let holder: Option<String> =
                    self.connection().ok().and_then(|con| redis::cmd("GET").arg(&owner_key).query(con).ok());
                let holder = holder
                    .as_deref()
                    .and_then(|h| serde_json::from_str::<Owner>(h).ok())
                    .map_or_else(|| "unknown".into(), |o| o.describe());
                Err(LogError::Held { what: format!("redis stream {} at {}", self.key, self.url), holder })
            }
            Err(LogError::Redis { message, .. }) => {
                self.con = None;
                Err(self.err(message))
            }
            Err(e) => Err(e),
        }
    }

    fn replay(&mut self) -> Result<Vec<Vec<u8>>, LogError> {
        Ok(self.recover()?.records)
    }

    fn recover(&mut self) -> Result<Recovered, LogError> {
        let snapshot_key = self.snapshot_key();
        let stored: Option<Vec<u8>> =
            redis::cmd("GET").arg(&snapshot_key).query(self.connection()?).map_err(|e| self.err(e))?;
        let snapshot = match stored {
            Some(bytes) => {
                let (seq, state) = decode_snapshot(&bytes).map_err(|why| LogError::Snapshot {
                    path: format!("{} {snapshot_key}", self.url),
                    why,
                })?;
                Some((seq, state.to_vec()))
            }
            None => None,
        };
        let covered = snapshot.as_ref().map_or(0, |s| s.0);
        let records = self.read_after(covered)?;
        let len: u64 =
            redis::cmd("XLEN").arg(&self.key).query(self.connection()?).map_err(|e| self.err(e))?;
        self.trimmed = self.seq.saturating_sub(len);
        Ok(Recovered { snapshot, records })
    }

    fn write_snapshot(&mut self, seq: u64, state: &[u8]) -> Result<(), LogError> {
        let bytes = encode_snapshot(seq, state);
        // One transaction: the snapshot and the trim land together or not at all, so no crash
        // leaves a trimmed stream without the snapshot that covers it.
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("SET").arg(self.snapshot_key()).arg(bytes).ignore();
        if !self.keep_rotated {
            pipe.cmd("XTRIM").arg(&self.key).arg("MINID").arg("=").arg(format!("{}-0", seq + 1)).ignore();
        }
        let wait_aof = self.wait_aof;
        let key = self.key.clone();
        let result = (|| {
            let con = self.connection()?;
            let () = pipe
                .query(con)
                .map_err(|e| LogError::Redis { url: String::new(), message: e.to_string() })?;
            if wait_aof {
                Self::wait_for_aof(con).map_err(|message| LogError::Redis { url: String::new(), message })?;
            }
            let len: u64 = redis::cmd("XLEN")
                .arg(&key)
                .query(con)
                .map_err(|e| LogError::Redis { url: String::new(), message: e.to_string() })?;
            Ok(len)
        })();
        match result {
            Ok(len) => {
                self.trimmed = self.seq.saturating_sub(len);
                Ok(())
            }
            Err(LogError::Redis { message, .. }) => {
                self.con = None;
                Err(self.err(message))
            }
            Err(e) => Err(e),
        }
    }
}

impl RedisLog {
    /// The stream's entries after `covered`, checking that their ids run on from it.
    fn read_after(&mut self, covered: u64) -> Result<Vec<Vec<u8>>, LogError> {
        let mut out = Vec::new();
        let mut start = format!("{}-0", covered + 1);
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
                let id = String::from_utf8_lossy(id).into_owned();
                let expected = format!("{}-0", covered + out.len() as u64 + 1);
                if id != expected {
                    return Err(LogError::Diverged {
                        log: self.key.clone(),
                        message: format!(
                            "stream entry {} has id {id}, not {expected}: a gap (Redis lost writes) or another writer (or a quarry from before entry ids were sequence numbers)",
                            covered + out.len() as u64 + 1
                        ),
                    });
                }
                out.push(payload.to_vec());
                last_id = Some(id);
            }
            match last_id {
                // Exclusive start: the next page begins after the last id seen.
                Some(id) if n == PAGE => start = format!("({id}"),
                _ => break,
            }
        }
        self.seq = covered + out.len() as u64;
        Ok(out)
    }
}
