//! The Redis keys of the screen-pop context.
//!
//! Numbers never appear in key names: `{n}` below is a [`NumberKey`], the first 128 bits of the
//! SHA-256 of the E.164 number, in hex. (A pseudonym that keeps raw numbers out of key listings,
//! `MONITOR` output and the `pop_invalidations` table; not a secret against someone who can
//! enumerate the numbering plan.)
//!
//! - `pop:{n}`: the encoded `ScreenPop` (protobuf bytes) for a caller number, with a TTL
//!   (short for unknown numbers).
//! - `popgen:{n}`: the number's generation, incremented by every invalidation. A reader that
//!   missed notes the generation before querying PostgreSQL and stores its result only if the
//!   generation has not moved meanwhile (one Lua script), so a slow reader can never put back a card
//!   that a committed write has already invalidated.
//! - `pins:{n}`: a hash of the pops pinned to calls from this number, by call id: 8 bytes of
//!   generation, then the encoded pop. A pin is used while the number's generation is unchanged, so
//!   every agent who touches the call gets the same card at once, and never a card older than the
//!   last acknowledged write. An invalidation deletes the number's pop and all its pins with it, so
//!   erasing a customer leaves no copy of their card behind.
//! - `poplsn:{n}`: the primary's WAL position just after the number's latest invalidated write
//!   committed, kept for a minute. A miss may read a read replica only if it has replayed past it
//!   (`read_replicas`), so a replica never puts an older card in the cache. Set in the same atomic
//!   step as the generation; `i64::MAX` when the position could not be read (the primary only).

use std::time::Duration;

use redis::Script;
use sha2::{Digest, Sha256};

use crate::redis_link::{RedisLink, RedisLinkError};

/// How long a generation counter outlives its last invalidation; longer than any card or pin TTL.
const GENERATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an invalidation's WAL position is kept: far longer than any replica may lag and still
/// take reads (`--database-replica-max-lag-ms`), so one that has forgotten it has replayed it.
const FENCE_TTL: Duration = Duration::from_secs(60);

/// A number's pseudonym in Redis key names and in `pop_invalidations`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumberKey(String);

impl NumberKey {
    pub fn of(e164: &str) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(e164.as_bytes());
        let hex = digest[..16]
            .iter()
            .flat_map(|byte| [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]])
            .map(char::from)
            .collect();
        Self(hex)
    }

    /// A key read back from `pop_invalidations`.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What one round trip found for a number (and a call).
#[derive(Debug, Default)]
pub struct CachedRead {
    pub pop: Option<Vec<u8>>,
    pub generation: Option<i64>,
    /// `poplsn:{n}`: what a replica must have replayed to answer this number's miss.
    pub fence: Option<i64>,
    pub pin: Option<Vec<u8>>,
}

impl CachedRead {
    /// The pinned pop, if there is one and it was built at the current generation.
    pub fn current_pin(&self) -> Option<&[u8]> {
        let pin = self.pin.as_deref()?;
        let (generation, pop) = pin.split_at_checked(8)?;
        let pinned_at = i64::from_be_bytes(generation.try_into().ok()?);
        (pinned_at == self.generation.unwrap_or(0)).then_some(pop)
    }
}

#[derive(Clone, Debug)]
pub struct CacheTtls {
    pub pop: Duration,
    pub negative: Duration,
    pub pin: Duration,
}

#[derive(Clone)]
pub struct PopCache {
    link: RedisLink,
    ttls: CacheTtls,
    store_if_current: Script,
}

impl PopCache {
    /// A cache used only to invalidate (the retention job): its TTLs are never read.
    pub fn invalidation_only(link: RedisLink) -> Self {
        Self::new(
            link,
            CacheTtls {
                pop: Duration::ZERO,
                negative: Duration::ZERO,
                pin: Duration::ZERO,
            },
        )
    }

    pub fn new(link: RedisLink, ttls: CacheTtls) -> Self {
        let store_if_current = Script::new(
            r"
            local current = redis.call('GET', KEYS[2])
            if (current == false and ARGV[1] == '') or current == ARGV[1] then
                redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
                return 1
            end
            return 0
            ",
        );
        Self {
            link,
            ttls,
            store_if_current,
        }
    }

    pub fn link(&self) -> &RedisLink {
        &self.link
    }

    /// One round trip: the cached pop, the generation and (with a call id) the pin.
    pub async fn read(
        &self,
        number: &NumberKey,
        call_id: Option<&str>,
    ) -> Result<CachedRead, RedisLinkError> {
        let pop_key = self.number_key("pop", number);
        let generation_key = self.number_key("popgen", number);
        let fence_key = self.number_key("poplsn", number);
        match call_id {
            None => {
                let (pop, generation, fence) = self
                    .link
                    .run(|mut conn| async move {
                        redis::pipe()
                            .get(&pop_key)
                            .get(&generation_key)
                            .get(&fence_key)
                            .query_async(&mut conn)
                            .await
                    })
                    .await?;
                Ok(CachedRead {
                    pop,
                    generation,
                    fence,
                    pin: None,
                })
            }
            Some(call_id) => {
                let pins_key = self.number_key("pins", number);
                let (pop, generation, fence, pin) = self
                    .link
                    .run(|mut conn| async move {
                        redis::pipe()
                            .get(&pop_key)
                            .get(&generation_key)
                            .get(&fence_key)
                            .hget(&pins_key, call_id)
                            .query_async(&mut conn)
                            .await
                    })
                    .await?;
                Ok(CachedRead {
                    pop,
                    generation,
                    fence,
                    pin,
                })
            }
        }
    }

    /// Stores `pop` for `number` unless an invalidation has moved the generation since `generation`
    /// was read. Returns whether it was stored.
    pub async fn store_if_current(
        &self,
        number: &NumberKey,
        generation: Option<i64>,
        pop: &[u8],
        known: bool,
    ) -> Result<bool, RedisLinkError> {
        let ttl = if known {
            self.ttls.pop
        } else {
            self.ttls.negative
        };
        let mut invocation = self.store_if_current.prepare_invoke();
        invocation
            .key(self.number_key("pop", number))
            .key(self.number_key("popgen", number))
            .arg(generation.map(|g| g.to_string()).unwrap_or_default())
            .arg(pop)
            .arg(ttl.as_millis() as u64);
        self.link
            .run(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|stored| stored == 1)
    }

    /// Pins `pop`, read at `generation`, to a call.
    /// (The pins of a number expire together, `pin` after the last one was set.)
    pub async fn pin(
        &self,
        number: &NumberKey,
        call_id: &str,
        generation: Option<i64>,
        pop: &[u8],
    ) -> Result<(), RedisLinkError> {
        let mut value = Vec::with_capacity(8 + pop.len());
        value.extend_from_slice(&generation.unwrap_or(0).to_be_bytes());
        value.extend_from_slice(pop);
        let key = self.number_key("pins", number);
        let ttl = self.ttls.pin.as_millis() as i64;
        let call_id = call_id.to_owned();
        self.link
            .run(|mut conn| async move {
                redis::pipe()
                    .hset(&key, &call_id, value)
                    .ignore()
                    .pexpire(&key, ttl)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    /// `prefix + kind + ":{" + number + "}"`. The braces are a Redis Cluster hash tag: every key
    /// of one number hashes to the same slot, so the scripts and MULTI blocks that use several
    /// of them together work on a cluster.
    fn number_key(&self, kind: &str, number: &NumberKey) -> String {
        self.link.key(&format!("{kind}:{{{}}}", number.as_str()))
    }

    /// Drops the cached pops and pins of `numbers` and moves their generations, and sets their
    /// fences: `fence` is the primary's WAL position read after the write committed. Atomic per
    /// number (one MULTI block each, all sent at once): a cluster keeps different numbers on
    /// different shards.
    ///
    /// With `wait_replicas` set, each block is followed by `WAIT` on its shard, and fewer replicas
    /// acknowledging it than asked, or than the master has connected if fewer (`ROLE`), is a
    /// failure: the invalidation stays pending and pops come from PostgreSQL until it is applied
    /// again. Otherwise a replica that had not yet received the block could be promoted by a
    /// fail-over and serve the card the write changed. A master left with no replica (its replica
    /// was promoted, the old master is gone) needs none: no replica there can be promoted stale.
    pub async fn invalidate(
        &self,
        numbers: &[NumberKey],
        fence: i64,
    ) -> Result<(), RedisLinkError> {
        if numbers.is_empty() {
            return Ok(());
        }
        let replicas = self.link.wait_replicas();
        // WAIT's own bound, inside the command timeout so that its answer arrives.
        let wait_ms = (self.link.op_timeout().as_millis() as u64 / 2).max(1);
        let blocks: Vec<redis::Pipeline> = numbers
            .iter()
            .map(|number| {
                let generation_key = self.number_key("popgen", number);
                let mut pipe = redis::pipe();
                pipe.cmd("MULTI")
                    .ignore()
                    .incr(&generation_key, 1)
                    .ignore()
                    .pexpire(&generation_key, GENERATION_TTL.as_millis() as i64)
                    .ignore()
                    .pset_ex(
                        self.number_key("poplsn", number),
                        fence,
                        FENCE_TTL.as_millis() as u64,
                    )
                    .ignore()
                    .del(self.number_key("pop", number))
                    .ignore()
                    .del(self.number_key("pins", number))
                    .ignore()
                    .cmd("EXEC")
                    .ignore();
                if replicas > 0 {
                    pipe.cmd("WAIT").arg(replicas).arg(wait_ms).cmd("ROLE");
                }
                pipe
            })
            .collect();
        let untagged: Vec<(redis::Cmd, Vec<redis::Cmd>)> = numbers
            .iter()
            .map(|number| self.untagged_invalidation(number.as_str(), fence))
            .collect();
        self.link
            .run(|conn| async move {
                let blocks = blocks.into_iter().map(|pipe| {
                    let mut conn = conn.clone();
                    async move {
                        let answers: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
                        match answers.as_slice() {
                            [acknowledged, role]
                                if !enough_replicas(acknowledged, role, replicas) =>
                            {
                                Err(redis::RedisError::from((
                                    redis::ErrorKind::Io,
                                    "too few replicas acknowledged the invalidation",
                                )))
                            }
                            _ => Ok(()),
                        }
                    }
                });
                let untagged = untagged.into_iter().map(|(first, then)| {
                    let conn = conn.clone();
                    async move {
                        first.query_async::<()>(&mut conn.clone()).await?;
                        let then = then.into_iter().map(|cmd| {
                            let mut conn = conn.clone();
                            async move { cmd.query_async::<()>(&mut conn).await }
                        });
                        futures::future::try_join_all(then).await.map(|_| ())
                    }
                });
                futures::try_join!(
                    futures::future::try_join_all(blocks),
                    futures::future::try_join_all(untagged)
                )
                .map(|_| ())
            })
            .await
    }

    /// The same for the key names of the release before hash tags (`pop:<number>`, ...), so an
    /// instance of that release, still running during a rolling upgrade, never serves a card
    /// this write changed: its generation moves first, so a pop it is building cannot store
    /// the old card after the delete. One command per key (they hash to different slots): the
    /// generation's increment, then the rest. To be removed once no deployment runs that release
    /// (docs/DEPLOYMENT.md, "Upgrading").
    fn untagged_invalidation(&self, number: &str, fence: i64) -> (redis::Cmd, Vec<redis::Cmd>) {
        let generation_key = self.link.key(&format!("popgen:{number}"));
        let mut expire = redis::cmd("PEXPIRE");
        expire
            .arg(&generation_key)
            .arg(GENERATION_TTL.as_millis() as i64);
        let mut fence_set = redis::cmd("SET");
        fence_set
            .arg(self.link.key(&format!("poplsn:{number}")))
            .arg(fence)
            .arg("PX")
            .arg(FENCE_TTL.as_millis() as u64);
        let deleted = ["pop", "pins"].map(|kind| {
            let mut deleted = redis::cmd("DEL");
            deleted.arg(self.link.key(&format!("{kind}:{number}")));
            deleted
        });
        let mut bumped = redis::cmd("INCR");
        bumped.arg(generation_key);
        let [pop, pins] = deleted;
        (bumped, vec![expire, fence_set, pop, pins])
    }
}

/// Whether `WAIT`'s count covers `wanted` replicas, or every replica `ROLE` lists as connected
/// to this master when it has fewer.
fn enough_replicas(acknowledged: &redis::Value, role: &redis::Value, wanted: u32) -> bool {
    let acknowledged = match acknowledged {
        redis::Value::Int(count) => *count,
        _ => return false,
    };
    let connected = match role {
        redis::Value::Array(fields) => match fields.get(2) {
            Some(redis::Value::Array(replicas)) => replicas.len() as i64,
            _ => 0,
        },
        _ => return false,
    };
    acknowledged >= i64::from(wanted).min(connected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(generation: i64, pop: &[u8]) -> Vec<u8> {
        [generation.to_be_bytes().as_slice(), pop].concat()
    }

    #[test]
    fn an_invalidation_waits_for_the_replicas_its_master_has() {
        use redis::Value::{Array, BulkString, Int};
        let role = |replicas: usize| {
            Array(vec![
                BulkString(b"master".to_vec()),
                Int(100),
                Array(vec![
                    Array(vec![BulkString(b"127.0.0.1".to_vec())]);
                    replicas
                ]),
            ])
        };
        assert!(enough_replicas(&Int(1), &role(1), 1));
        assert!(!enough_replicas(&Int(0), &role(1), 1), "a lagging replica");
        assert!(
            enough_replicas(&Int(0), &role(0), 1),
            "no replica to promote"
        );
        assert!(enough_replicas(&Int(1), &role(3), 1));
        assert!(!enough_replicas(&Int(1), &role(3), 2));
        assert!(!enough_replicas(&BulkString(b"?".to_vec()), &role(1), 1));
    }

    #[test]
    fn number_keys_are_stable_pseudonyms() {
        let key = NumberKey::of("+14155550100");
        assert_eq!(key, NumberKey::of("+14155550100"));
        assert_ne!(key, NumberKey::of("+14155550101"));
        assert_eq!(key.as_str().len(), 32);
        assert!(!key.as_str().contains("4155550100"));
        assert!(key.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        // The same as migration 0008's `encode(substring(sha256(number) FROM 1 FOR 16), 'hex')`.
        assert_eq!(key.as_str(), "40d3f4e02db27d66cf4cfdda506c2c94");
    }

    #[test]
    fn a_pin_is_current_only_at_its_generation() {
        let read = CachedRead {
            pin: Some(pinned(3, b"pop")),
            generation: Some(3),
            pop: None,
            fence: None,
        };
        assert_eq!(read.current_pin(), Some(b"pop".as_slice()));
        let moved = CachedRead {
            pin: Some(pinned(3, b"pop")),
            generation: Some(4),
            pop: None,
            fence: None,
        };
        assert_eq!(moved.current_pin(), None);
        let never_invalidated = CachedRead {
            pin: Some(pinned(0, b"pop")),
            generation: None,
            pop: None,
            fence: None,
        };
        assert_eq!(never_invalidated.current_pin(), Some(b"pop".as_slice()));
        let truncated = CachedRead {
            pin: Some(vec![1, 2]),
            generation: None,
            pop: None,
            fence: None,
        };
        assert_eq!(truncated.current_pin(), None);
    }
}
