//! Processors: synchronous stages between receivers and exporters. This module is the stage
//! contract ([`Processor`]) and the helpers that run a chain of stages; it imports no processor.
//! One folder per processor type below it; which type name builds which processor is
//! `service::registry`.
//!
//! A stage takes `now` instead of reading a clock, so a unit test drives time by hand; one async
//! runner (the pipeline task) owns channels, timers and cancellation. A processor never panics
//! and never fails the pipeline on odd data: it counts it and passes the data on.

pub mod anomaly;
pub mod batch;
pub mod genai;
pub mod quality;
pub mod slo;
pub mod tail_sampling;
pub mod trace_assembly;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::genai::Facts;
use crate::signal::Batch;

/// One stage of a pipeline.
pub trait Processor: Send {
    /// Take one batch; push whatever is ready to go on into `out` (nothing, the batch itself,
    /// or several batches).
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>);

    /// Called every `tick_interval`, for stages that hold data (batching, trace assembly).
    fn on_tick(&mut self, _now: Instant, _out: &mut Vec<Batch>) {}

    /// Called once at shutdown: flush everything held.
    fn on_shutdown(&mut self, _out: &mut Vec<Batch>) {}

    /// [`Processor::on_input`] with the GenAI facts of the batch's spans that the stages before
    /// handed along (see `genai::facts`): a stage that reads them, or that keeps them with the
    /// spans it holds, overrides this and passes them on with what it lets out. The default
    /// runs `on_input` and hands nothing on (a stage may have changed the spans).
    fn on_input_with(
        &mut self,
        batch: Batch,
        _facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        with_no_facts(out, |plain| self.on_input(batch, now, plain));
    }

    /// [`Processor::on_tick`], with the facts of what it lets out.
    fn on_tick_with(&mut self, now: Instant, out: &mut Vec<WithFacts>) {
        with_no_facts(out, |plain| self.on_tick(now, plain));
    }

    /// [`Processor::on_shutdown`], with the facts of what it lets out.
    fn on_shutdown_with(&mut self, out: &mut Vec<WithFacts>) {
        with_no_facts(out, |plain| self.on_shutdown(plain));
    }

    /// How often `on_tick` should run; None for a stage that holds nothing.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// A pipeline split into shards runs one chain per shard. A stage whose state must be one
    /// for the whole pipeline (SLO windows, anomaly baselines) gives the other shards handles
    /// onto it; None (the default) builds a fresh instance per shard.
    fn share(&self) -> Option<Box<dyn Processor>> {
        None
    }

    /// With a pipeline log (`storage`): the mark of the batch the next `on_input` gets (the
    /// lowest mark of the log records its data came from; None: from none). A stage that keeps
    /// data past the call remembers the marks of what it keeps, for [`Processor::held_mark`].
    fn input_mark(&mut self, _mark: Option<u64>) {}

    /// The lowest mark of the data this stage holds now (None: it holds nothing). Every stage
    /// that keeps data past `on_input` must say so here, or the pipeline log would release
    /// records whose data it still holds (see `pipeline::storage`).
    fn held_mark(&self) -> Option<u64> {
        None
    }
}

/// A batch with the facts handed along with it.
pub type WithFacts = (Batch, Option<Facts>);

/// `on_input` (`on_tick`, `on_shutdown`) of a stage whose work is in its `_with` method: what
/// `f` lets out, without the facts.
pub fn dropping_facts(out: &mut Vec<Batch>, f: impl FnOnce(&mut Vec<WithFacts>)) {
    let mut with = Vec::new();
    f(&mut with);
    out.extend(with.into_iter().map(|(b, _)| b));
}

/// The `on_input_with` of a stage that reads the facts of trace batches: `f` gets the request
/// with the facts of all its spans (those handed along, the others read now with `names`), and
/// the batch goes on with them; a batch of another signal goes on as it came.
pub fn with_trace_facts(
    mut batch: Batch,
    facts: Option<Facts>,
    names: &mut crate::genai::Names,
    out: &mut Vec<WithFacts>,
    f: impl FnOnce(&mut ExportTraceServiceRequest, &Facts),
) {
    let facts = match &mut batch {
        Batch::Traces(r) => {
            let facts = Facts::for_request(facts, r, names);
            f(r, &facts);
            Some(facts)
        }
        _ => facts,
    };
    out.push((batch, facts));
}

/// The `_with` methods' defaults: what the plain method `f` lets out, with no facts.
fn with_no_facts(out: &mut Vec<WithFacts>, f: impl FnOnce(&mut Vec<Batch>)) {
    let mut plain = Vec::new();
    f(&mut plain);
    out.extend(plain.into_iter().map(|b| (b, None)));
}

/// A batch with its mark: the lowest mark of the log records its data came from (None: no log,
/// or data of no record). See `pipeline::storage`.
pub type Marked = (Batch, Option<u64>);

fn lowest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The lowest mark any stage of `chain` holds.
pub fn held_mark(chain: &[Box<dyn Processor>]) -> Option<u64> {
    chain.iter().map(|s| s.held_mark()).fold(None, lowest)
}

/// Run `batches` through `chain` in order; what comes out of the last stage is returned.
pub fn run_chain(
    chain: &mut [Box<dyn Processor>],
    batches: Vec<Batch>,
    now: Instant,
) -> Vec<Batch> {
    unmark(run_chain_marked(chain, mark_none(batches), now))
}

fn mark_none(batches: Vec<Batch>) -> Vec<Marked> {
    batches.into_iter().map(|b| (b, None)).collect()
}

fn unmark(batches: Vec<Marked>) -> Vec<Batch> {
    batches.into_iter().map(|(b, _)| b).collect()
}

/// [`run_chain`] keeping marks: what a stage lets out is marked with the lowest of its input's
/// mark and what the stage held before (it may have let some of that out too), so a batch's
/// mark is never above that of any data in it.
pub fn run_chain_marked(
    chain: &mut [Box<dyn Processor>],
    batches: Vec<Marked>,
    now: Instant,
) -> Vec<Marked> {
    let batches = batches.into_iter().map(|(b, m)| (b, m, None)).collect();
    run_with_facts(chain, batches, now)
        .into_iter()
        .map(|(b, m, _)| (b, m))
        .collect()
}

/// A batch in a chain: its mark and the facts handed along with it.
type InFlight = (Batch, Option<u64>, Option<Facts>);

/// [`run_chain_marked`], handing each batch's facts from stage to stage.
fn run_with_facts(
    chain: &mut [Box<dyn Processor>],
    batches: Vec<InFlight>,
    now: Instant,
) -> Vec<InFlight> {
    let mut cur = batches;
    for stage in chain.iter_mut() {
        if cur.is_empty() {
            break;
        }
        let mut next = Vec::with_capacity(cur.len());
        let mut out = Vec::new();
        for (b, mark, facts) in cur {
            let out_mark = lowest(mark, stage.held_mark());
            stage.input_mark(mark);
            stage.on_input_with(b, facts, now, &mut out);
            next.extend(out.drain(..).map(|(b, f)| (b, out_mark, f)));
        }
        cur = next;
    }
    cur
}

/// Tick every stage; what a stage releases goes through the stages after it.
pub fn tick_chain(chain: &mut [Box<dyn Processor>], now: Instant) -> Vec<Batch> {
    unmark(tick_chain_marked(chain, now))
}

/// [`tick_chain`] keeping marks: what a stage releases is marked with what it held before.
pub fn tick_chain_marked(chain: &mut [Box<dyn Processor>], now: Instant) -> Vec<Marked> {
    let mut released = Vec::new();
    for i in 0..chain.len() {
        let mut out = Vec::new();
        let mark = chain[i].held_mark();
        chain[i].on_tick_with(now, &mut out);
        if !out.is_empty() {
            let out = out.into_iter().map(|(b, f)| (b, mark, f)).collect();
            released.extend(run_with_facts(&mut chain[i + 1..], out, now));
        }
    }
    released.into_iter().map(|(b, m, _)| (b, m)).collect()
}

/// Flush every stage, first to last, each flush going through the stages after it.
pub fn shutdown_chain(chain: &mut [Box<dyn Processor>], now: Instant) -> Vec<Batch> {
    unmark(shutdown_chain_marked(chain, now))
}

/// [`shutdown_chain`] keeping marks.
pub fn shutdown_chain_marked(chain: &mut [Box<dyn Processor>], now: Instant) -> Vec<Marked> {
    let mut released = Vec::new();
    for i in 0..chain.len() {
        let mut out = Vec::new();
        let mark = chain[i].held_mark();
        chain[i].on_shutdown_with(&mut out);
        if !out.is_empty() {
            let out = out.into_iter().map(|(b, f)| (b, mark, f)).collect();
            released.extend(run_with_facts(&mut chain[i + 1..], out, now));
        }
    }
    released.into_iter().map(|(b, m, _)| (b, m)).collect()
}
