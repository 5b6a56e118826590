//! The counter Durable Object: one strongly consistent home per counter key.
//!
//! Each counter key (`ip:<addr>`, `user:<id>`, the month's budget, `origin`, `handoff:<conv>`,
//! ...) gets its own object, named by the key, so traffic spreads over as many objects as there
//! are users and IPs; only the global origin cap and the budget are one object each, as they
//! must be to stay exact. An object keeps its cell in memory and in its storage, and answers
//! two requests, `/load` and `/cas` ([`crate::wire`]). The runtime delivers no other event to
//! an object while it reads its storage, so a compare-and-swap is one atomic step. Between
//! requests an object's alarm sweeps a drained limit cell, and the `origin` object's alarm
//! runs the tier watch ([`crate::watch`]).

use std::cell::{Cell as StdCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use tidegate_core::store::{StoreError, Version};
use tidegate_core::tier::{Recommendation, Tier, TierConfig};
use tidegate_core::UnixMs;
use worker::{
    console_error, console_warn, durable_object, Date, Delay, DurableObject, Env, Method,
    ObjectNamespace, Request, RequestInit, Response, State,
};

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::js_sys;
use worker::wasm_bindgen_futures::JsFuture;

use crate::edge::{deliver, env_text, FLAGS_BINDING};
use crate::replay::{self, CasResult, Cell};
use crate::watch::{self, Sweep, TierWatch};
use crate::{settings, wire};

#[wasm_bindgen]
extern "C" {
    /// The object's storage as JavaScript sees it.
    type RawStorage;

    /// `storage.put(key, value, options)`.
    #[wasm_bindgen(method, catch, js_name = put)]
    fn put_with(
        this: &RawStorage,
        key: &str,
        value: JsValue,
        options: &js_sys::Object,
    ) -> Result<js_sys::Promise, JsValue>;
}

/// Durable Object binding of the counters.
pub const COUNTERS_BINDING: &str = "COUNTERS";
const STORAGE_KEY: &str = "cell";
/// Where an object keeps the counter key it holds (its alarm needs it).
const NAME_KEY: &str = "key";

/// The counter object (class name `Counter` in `wrangler.toml`).
#[durable_object]
pub struct Counter {
    state: State,
    /// The same storage, for the `put` options workers-rs does not expose.
    raw_storage: RawStorage,
    env: Env,
    cell: RefCell<Option<Cell>>,
    /// The counter key, once a write or the storage told it.
    key: RefCell<Option<String>>,
    /// When the alarm this object set will fire (ms), while one is pending.
    alarm_at: StdCell<Option<u64>>,
    /// Origin QPS and tier recommendation (the `origin` object only).
    watch: RefCell<TierWatch>,
    /// `[tiers]` of the config, read on the first tick.
    tiers: RefCell<Option<TierConfig>>,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("key", &self.key)
            .field("cell", &self.cell)
            .finish()
    }
}

impl Counter {
    async fn current(&self) -> worker::Result<Cell> {
        if let Some(c) = *self.cell.borrow() {
            return Ok(c);
        }
        let stored: Option<String> = self.state.storage().get(STORAGE_KEY).await?;
        let c = match stored {
            Some(t) => wire::parse_cell(&t)
                .ok_or_else(|| worker::Error::RustError("corrupt counter cell".into()))?,
            None => None,
        };
        // Keep a cell another request cached (and maybe changed) while this one read storage.
        Ok(*self.cell.borrow_mut().get_or_insert(c))
    }

    async fn cas(&self, body: &str) -> worker::Result<Response> {
        let Some((key, expected, value)) = wire::parse_cas_request(body) else {
            return Response::error("bad cas request", 400);
        };
        let current = self.current().await?;
        let now = now();
        let (next, result) = wire::apply_cas(current, expected, value, watch::first_version(now));
        if let CasResult::Written(_) = result {
            *self.cell.borrow_mut() = Some(next);
            let mut stored = self.put_unconfirmed(STORAGE_KEY, &wire::cell(next)).await;
            if stored.is_ok() && self.key.borrow().is_none() {
                stored = self.put_unconfirmed(NAME_KEY, &key).await;
                if stored.is_ok() {
                    *self.key.borrow_mut() = Some(key.clone());
                }
            }
            if let Err(e) = stored {
                // Forget the cached cell: the next request re-reads what is stored.
                *self.cell.borrow_mut() = None;
                return Err(e);
            }
            if key == watch::ORIGIN_KEY {
                self.watch.borrow_mut().record(now);
            }
            if self.alarm_at.get().is_none() {
                if let Some(at) = watch::wake_after_write(&key, value, now) {
                    self.wake_at(at).await;
                }
            }
        }
        Response::ok(wire::cas_result(&result))
    }

    /// Writes `value` without holding the object's replies until the write is confirmed
    /// durable (`allowUnconfirmed`). By default the runtime holds every reply of an object
    /// until its writes are flushed; a counter cell is the object's in-memory state, read by
    /// every later request, so that wait bought nothing but latency on every limit check (in
    /// local workerd it was most of a forwarded request's time). If a write ever fails the
    /// runtime resets the object, which then reads its last stored cell: a limit may admit
    /// the few requests whose writes were lost, never refuse wrongly.
    async fn put_unconfirmed(&self, key: &str, value: &str) -> worker::Result<()> {
        let options = js_sys::Object::new();
        js_sys::Reflect::set(&options, &"allowUnconfirmed".into(), &true.into())?;
        let promise = self
            .raw_storage
            .put_with(key, JsValue::from_str(value), &options)?;
        JsFuture::from(promise).await?;
        Ok(())
    }

    /// Sets the alarm. A failure only delays the sweep or the tier watch until the next
    /// write, so it is logged, not returned to the request.
    async fn wake_at(&self, at: UnixMs) {
        // workers-rs takes an offset from now.
        let offset = Duration::from_millis(at.0.saturating_sub(now().0));
        match self.state.storage().set_alarm(offset).await {
            Ok(()) => self.alarm_at.set(Some(at.0)),
            Err(e) => console_warn!("tidegate: counter alarm not set: {e}"),
        }
    }

    async fn name(&self) -> worker::Result<Option<String>> {
        if let Some(k) = self.key.borrow().clone() {
            return Ok(Some(k));
        }
        let stored: Option<String> = self.state.storage().get(NAME_KEY).await?;
        if let Some(k) = &stored {
            *self.key.borrow_mut() = Some(k.clone());
        }
        Ok(stored)
    }

    /// The tier watch's look at origin QPS; true while it wants to look again.
    async fn tier_tick(&self, now: UnixMs) -> bool {
        let cached = self.tiers.borrow().clone();
        let cfg = match cached {
            Some(c) => c,
            None => match settings::load(
                env_text(&self.env, settings::CONFIG_VAR).as_deref(),
                |n| env_text(&self.env, n),
                None,
            ) {
                Ok(s) => {
                    *self.tiers.borrow_mut() = Some(s.config.tiers.clone());
                    s.config.tiers
                }
                Err(e) => {
                    console_error!("tidegate: config error, no tier watch: {e}");
                    return false;
                }
            },
        };
        let tick = self.watch.borrow_mut().tick(now, &cfg);
        if let Some(rec) = tick.recommendation {
            self.publish(&rec, &cfg).await;
        }
        tick.again
    }

    /// Writes a recommendation to the `FLAGS` namespace (and the tier flag itself when
    /// `auto_activate` is on) and posts the alert.
    async fn publish(&self, rec: &Recommendation, cfg: &TierConfig) {
        console_warn!(
            "tidegate: tier recommendation {} -> {} at {:.1} origin req/s",
            rec.from.as_str(),
            rec.to.as_str(),
            rec.qps
        );
        let kv = match self.env.kv(FLAGS_BINDING) {
            Ok(kv) => kv,
            Err(e) => {
                console_error!("tidegate: no {FLAGS_BINDING} KV binding: {e}");
                return;
            }
        };
        let put = |key: String| {
            let kv = &kv;
            async move {
                match kv.put(&key, rec.to.as_str()) {
                    Ok(p) => p.execute().await,
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = put(cfg.recommendation_key.clone()).await {
            console_error!("tidegate: could not store the tier recommendation: {e}");
        }
        let activated = cfg.auto_activate
            && match put(cfg.flag_key.clone()).await {
                Ok(()) => true,
                Err(e) => {
                    console_error!("tidegate: could not activate the recommended tier: {e}");
                    false
                }
            };
        let active = if activated {
            rec.to
        } else {
            let flag = kv.get(&cfg.flag_key).text().await.ok().flatten();
            flag.as_deref().and_then(Tier::parse).unwrap_or_default()
        };
        if let Some(call) = rec.alert_call(cfg, active, activated) {
            deliver(call, "alert").await;
        }
    }
}

impl DurableObject for Counter {
    fn new(state: State, env: Env) -> Self {
        let inner = state._inner();
        let raw_storage = inner
            .storage()
            .map(JsCast::unchecked_into)
            .unwrap_or_else(|_| JsValue::UNDEFINED.unchecked_into());
        let state = State::from(inner);
        Counter {
            state,
            raw_storage,
            env,
            cell: RefCell::new(None),
            key: RefCell::new(None),
            alarm_at: StdCell::new(None),
            watch: RefCell::new(TierWatch::default()),
            tiers: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        match req.path().as_str() {
            "/load" => Response::ok(wire::cell(self.current().await?)),
            "/cas" => {
                let body = req.text().await?;
                self.cas(&body).await
            }
            _ => Response::error("not found", 404),
        }
    }

    /// Wakes up for the tier watch (origin object) or to sweep a drained limit cell.
    async fn alarm(&self) -> worker::Result<Response> {
        self.alarm_at.set(None);
        let now = now();
        let Some(key) = self.name().await? else {
            return Response::ok("no key");
        };
        if key == watch::ORIGIN_KEY && self.tier_tick(now).await {
            self.wake_at(UnixMs(now.0.saturating_add(watch::TICK_MS)))
                .await;
            return Response::ok("watching");
        }
        match watch::sweep(&key, self.current().await?, now) {
            Sweep::Delete => {
                // Only the cell goes; the key stays so a later write needs no extra put.
                self.state.storage().delete(STORAGE_KEY).await?;
                *self.cell.borrow_mut() = Some(None);
                Response::ok("swept")
            }
            Sweep::WakeAt(at) => {
                self.wake_at(at).await;
                Response::ok("not drained yet")
            }
            Sweep::Idle => Response::ok("idle"),
        }
    }
}

fn now() -> UnixMs {
    UnixMs(Date::now().as_millis())
}

/// The Worker's side: [`replay::Remote`] over the counter objects.
#[derive(Clone, Debug)]
pub struct DoRemote {
    ns: ObjectNamespace,
    arrival: UnixMs,
}

thread_local! {
    /// The latest time a stage of this isolate decided with.
    static DECIDED: StdCell<u64> = const { StdCell::new(0) };
}

impl DoRemote {
    /// The remote for the `COUNTERS` binding, for a request that arrived at `arrival`.
    pub fn from_env(env: &Env, arrival: UnixMs) -> worker::Result<Self> {
        Ok(DoRemote {
            ns: env.durable_object(COUNTERS_BINDING)?,
            arrival,
        })
    }

    async fn call(
        &self,
        key: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<String, StoreError> {
        let unavailable = |e: worker::Error| StoreError::Unavailable(e.to_string());
        let stub = self.ns.get_by_name(key).map_err(unavailable)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(body.map(Into::into));
        let req = Request::new_with_init(&format!("https://counter{path}"), &init)
            .map_err(unavailable)?;
        let mut resp = stub.fetch_with_request(req).await.map_err(unavailable)?;
        let text = resp.text().await.map_err(unavailable)?;
        if resp.status_code() != 200 {
            return Err(StoreError::Unavailable(format!(
                "counter object answered {}",
                resp.status_code()
            )));
        }
        Ok(text)
    }

    async fn load_one(&self, key: &str) -> Result<Cell, StoreError> {
        let text = self.call(key, "/load", None).await?;
        wire::parse_cell(&text).ok_or_else(|| StoreError::Unavailable("bad cell".into()))
    }
}

thread_local! {
    /// Per-key turns of this isolate (see [`replay::Remote::hold`]).
    static TURNS: RefCell<HashMap<String, Rc<Turn>>> = RefCell::new(HashMap::new());
}

/// Entries kept before idle turns are dropped.
const TURNS_KEPT: usize = 4096;
/// A turn held longer than this is taken over: its holder was cancelled without dropping it.
const TURN_STALE_MS: u64 = 2_000;
/// How often a waiter looks again. Waiting on a timer keeps the request's own I/O pending, so
/// workerd does not take it for a request hung on another request's promise.
const TURN_POLL_MS: u64 = 1;
/// Longest pause between looks (the pause doubles from [`TURN_POLL_MS`]).
const TURN_POLL_MAX_MS: u64 = 4;

/// Who holds a key in this isolate: a generation and since when, or nobody.
#[derive(Debug, Default)]
struct Turn {
    held: StdCell<Option<(u64, u64)>>,
    next: StdCell<u64>,
}

/// A held turn; dropping it lets the next waiter in (unless it was taken over meanwhile).
#[derive(Debug)]
pub struct TurnGuard {
    turn: Rc<Turn>,
    generation: u64,
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        if self
            .turn
            .held
            .get()
            .is_some_and(|(g, _)| g == self.generation)
        {
            self.turn.held.set(None);
        }
    }
}

impl replay::Remote for DoRemote {
    type Guard = TurnGuard;

    /// A request decides as of its arrival, but never earlier than a decision this isolate
    /// already made: requests of one burst that wait for their turns are judged as the burst
    /// they arrived in (the limit counts arrivals), and a request that waited long does not
    /// decide with a time the counters have left behind (a limiter's clock must not go back).
    fn now(&self) -> UnixMs {
        let t = DECIDED.with(|d| {
            let t = d.get().max(self.arrival.0);
            d.set(t);
            t
        });
        UnixMs(t)
    }

    /// Best effort: correctness never depends on it (every write is a compare-and-swap), so a
    /// turn left behind by a cancelled request is simply taken over after [`TURN_STALE_MS`].
    async fn hold(&self, key: &str) -> TurnGuard {
        let turn = TURNS.with(|t| {
            let mut t = t.borrow_mut();
            if t.len() > TURNS_KEPT {
                t.retain(|_, turn| turn.held.get().is_some());
            }
            t.entry(key.to_owned()).or_default().clone()
        });
        let mut poll = TURN_POLL_MS;
        loop {
            let now = Date::now().as_millis();
            let free = match turn.held.get() {
                None => true,
                Some((_, since)) => now.saturating_sub(since) > TURN_STALE_MS,
            };
            if free {
                let generation = turn.next.get().wrapping_add(1);
                turn.next.set(generation);
                turn.held.set(Some((generation, now)));
                return TurnGuard { turn, generation };
            }
            Delay::from(Duration::from_millis(poll)).await;
            poll = (poll * 2).min(TURN_POLL_MAX_MS);
        }
    }

    async fn load(&self, keys: &[String]) -> Vec<Result<Cell, StoreError>> {
        join_all(keys.iter().map(|k| async move {
            if let Some(c) = CELLS.with(|c| c.borrow().get(k).copied()) {
                return Ok(c);
            }
            let c = self.load_one(k).await;
            if let Ok(c) = c {
                remember(k, c);
            }
            c
        }))
        .await
    }

    async fn fresh(&self, keys: &[String]) -> Vec<Result<Cell, StoreError>> {
        join_all(keys.iter().map(|k| async move {
            let c = self.load_one(k).await;
            if let Ok(c) = c {
                remember(k, c);
            }
            c
        }))
        .await
    }

    async fn cas(
        &self,
        key: &str,
        expected: Option<Version>,
        value: u64,
    ) -> Result<CasResult, StoreError> {
        let text = self
            .call(key, "/cas", Some(wire::cas_request(key, expected, value)))
            .await?;
        let r = wire::parse_cas_result(&text)
            .ok_or_else(|| StoreError::Unavailable("bad cas reply".into()))?;
        match r {
            CasResult::Written(ver) => remember(key, Some((value, ver))),
            CasResult::Lost(now) => remember(key, now),
        }
        Ok(r)
    }
}

thread_local! {
    /// Cells as this isolate last saw them. Read only under the key's turn, so they are current
    /// unless another isolate wrote meanwhile: a write then loses its compare-and-swap and
    /// refreshes, and a cell that was only read is checked with [`replay::Remote::fresh`].
    static CELLS: RefCell<HashMap<String, Cell>> = RefCell::new(HashMap::new());
}

/// Cells kept per isolate before the cache starts over.
const CELLS_KEPT: usize = 16_384;

fn remember(key: &str, cell: Cell) {
    CELLS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CELLS_KEPT && !c.contains_key(key) {
            c.clear();
        }
        c.insert(key.to_owned(), cell);
    });
}
