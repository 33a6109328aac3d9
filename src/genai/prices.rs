//! Model prices and the cost of a GenAI span.
//!
//! The built-in table is `config/prices.yaml`, compiled in. Users add or replace entries with the
//! same schema ([`PriceTable::with_overrides`]). An entry matches an optional provider and a model
//! pattern (exact, or a glob with `*`); the most specific match wins:
//!
//! 1. exact on the model as sent, then exact on its base name (dated or versioned suffixes such as
//!    `-2024-08-06`, `-20241022`, `-latest`, `-001`, `-v2` removed), then a glob;
//! 2. then a user entry over a built-in one;
//! 3. then a provider-qualified entry over a provider-less one;
//! 4. then the longer literal prefix.
//!
//! Provider prefixes in the model name (`openai/gpt-4o`, `models/gemini-2.5-pro`,
//! `us.anthropic.claude-...-v2:0`, Vertex `...@20241022`) are removed before matching. Entries are
//! first searched among those whose provider agrees with the span's (or that name none). When
//! none matches, a model name that matches the entries of exactly one vendor is priced with that
//! vendor's entry: every library labels a Claude model behind an OpenAI-compatible URL as provider
//! `openai`, and Bedrock/Vertex serve Claude at Anthropic's list prices. A model that matches
//! nothing, or several vendors, is never guessed: it is unpriced.
//!
//! The match for a (provider, model) pair is remembered per thread (see [`LookupCache`]): a model
//! seen before costs one hash lookup, not a scan of every pattern.

use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::{Equivalent, HashMap};

use serde::{Deserialize, Serialize};

use super::aliases;
use super::view::{GenAiView, Tokens};

/// The built-in price table.
pub const BUILTIN_PRICES_YAML: &str = include_str!("../../config/prices.yaml");

/// One price entry. Prices are USD per 1 million tokens; `per_request` is USD per call.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// A unique id, e.g. `openai/gpt-4o`; a user entry with a built-in's id replaces it.
    pub id: String,
    /// The provider the entry applies to (compared after [`aliases::canonical_provider`]); none
    /// means any provider.
    #[serde(default)]
    pub provider: Option<String>,
    /// The model pattern: an exact name, or a glob with `*`.
    pub model: String,
    /// More patterns for the same model (other spellings of its name).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Input tokens (uncached).
    #[serde(default)]
    pub input: Option<f64>,
    /// Output tokens (reasoning included).
    #[serde(default)]
    pub output: Option<f64>,
    /// Input tokens read from a prompt cache (default: the input price).
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Input tokens written to a prompt cache (default: the input price).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// USD per call (a rerank search), added to the token prices.
    #[serde(default)]
    pub per_request: Option<f64>,
    /// Prices that replace the base prices when the input tokens exceed a threshold.
    #[serde(default)]
    pub tiers: Vec<PriceTier>,
    /// The model's context window, in tokens.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// The date (`YYYY-MM-DD`) from which these prices apply.
    #[serde(default)]
    pub effective_date: Option<String>,
    /// Where the prices come from (the vendor's pricing page).
    #[serde(default)]
    pub source: Option<String>,
}

/// Prices for requests whose input tokens (cached ones included) exceed `above_input_tokens`;
/// they apply to the whole request.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    /// The threshold: the tier applies when input tokens > this.
    pub above_input_tokens: u64,
    /// Input tokens (uncached).
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Cache reads (default: this tier's input price).
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Cache writes (default: this tier's input price).
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl PriceEntry {
    /// Checks the entry, returning every problem found.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let id = if self.id.trim().is_empty() {
            problems.push("an entry has an empty id".to_owned());
            "(no id)"
        } else {
            self.id.as_str()
        };
        let mut problem = |what: String| problems.push(format!("{id}: {what}"));
        if self
            .provider
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            problem("provider is empty".to_owned());
        }
        for pattern in std::iter::once(&self.model).chain(&self.aliases) {
            if pattern.trim().is_empty() {
                problem("model pattern is empty".to_owned());
            } else if pattern.chars().all(|c| c == '*') {
                problem(format!("model pattern {pattern:?} would match every model"));
            }
        }
        let prices = [
            ("input", self.input),
            ("output", self.output),
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
            ("per_request", self.per_request),
        ];
        for (name, p) in prices.into_iter().filter_map(|(n, p)| Some((n, p?))) {
            if !(p.is_finite() && p >= 0.0) {
                problem(format!("{name} price {p} is not a non-negative number"));
            }
        }
        if self.input.is_none() && self.output.is_none() && self.per_request.is_none() {
            problem("has no input, output or per_request price".to_owned());
        }
        let mut last = 0;
        for tier in &self.tiers {
            let at = tier.above_input_tokens;
            if at == 0 || at <= last {
                problem(format!(
                    "tier thresholds must be positive and increasing (got {at} after {last})"
                ));
            }
            last = at;
            let prices = [
                ("input", Some(tier.input)),
                ("output", Some(tier.output)),
                ("cache_read", tier.cache_read),
                ("cache_write", tier.cache_write),
            ];
            for (name, p) in prices.into_iter().filter_map(|(n, p)| Some((n, p?))) {
                if !(p.is_finite() && p >= 0.0) {
                    problem(format!(
                        "tier above {at}: {name} price {p} is not a non-negative number"
                    ));
                }
            }
        }
        if self.context_window == Some(0) {
            problem("context_window is 0".to_owned());
        }
        if let Some(date) = self.effective_date.as_deref().filter(|d| !is_iso_date(d)) {
            problem(format!("effective_date {date:?} is not YYYY-MM-DD"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// A price table that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// The YAML did not parse into price entries.
    #[error("price table is not valid: {0}")]
    Parse(#[source] crate::config::yaml::YamlError),
    /// Entries failed validation; every problem is listed.
    #[error("invalid price entries: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    prices: Vec<PriceEntry>,
}

/// Parses price entries from YAML of the shape of `config/prices.yaml` (`prices: [...]`).
pub fn parse_entries(yaml: &str) -> Result<Vec<PriceEntry>, PriceError> {
    crate::config::yaml::from_str::<PriceFile>(yaml)
        .map(|f| f.prices)
        .map_err(PriceError::Parse)
}

/// Whether a cost the span supplied is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppliedCost {
    /// Use the span's own cost when it has one (OpenLIT `gen_ai.usage.cost`, OpenInference
    /// `llm.cost.total`, Langfuse `cost_details`).
    #[default]
    Prefer,
    /// Always compute from the price table.
    Ignore,
}

/// Where a cost came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostSource {
    /// Computed from the price table.
    Computed,
    /// Supplied by the span.
    Supplied,
}

impl CostSource {
    /// `computed` or `supplied`.
    pub fn as_str(self) -> &'static str {
        match self {
            CostSource::Computed => "computed",
            CostSource::Supplied => "supplied",
        }
    }
}

impl fmt::Display for CostSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cost of one span, in USD. A supplied cost has only a total (its parts are 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost<'t> {
    /// The sum of the parts (or the supplied total).
    pub total_usd: f64,
    /// Uncached input tokens.
    pub input_usd: f64,
    /// Output tokens (reasoning included).
    pub output_usd: f64,
    /// Cache reads.
    pub cache_read_usd: f64,
    /// Cache writes.
    pub cache_write_usd: f64,
    /// The per-call price (rerank searches).
    pub request_usd: f64,
    /// Computed or supplied.
    pub source: CostSource,
    /// The price entry used (none for a supplied cost).
    pub price_id: Option<&'t str>,
}

/// Why a span has no cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpriced {
    /// The span names no model.
    NoModel,
    /// No entry matches the model (or entries of several vendors do): never guessed.
    UnknownModel,
    /// The span reports no usage and the entry has no per-call price.
    NoUsage,
    /// The span used tokens of a kind the entry has no price for.
    MissingRate,
}

/// The outcome of pricing a span.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CostOutcome<'t> {
    /// A cost.
    Priced(Cost<'t>),
    /// No cost, and why.
    Unpriced(Unpriced),
}

impl<'t> CostOutcome<'t> {
    /// The cost, if priced.
    pub fn priced(self) -> Option<Cost<'t>> {
        match self {
            CostOutcome::Priced(cost) => Some(cost),
            CostOutcome::Unpriced(_) => None,
        }
    }
}

/// A validated, compiled price table.
#[derive(Clone, Debug)]
pub struct PriceTable {
    entries: Vec<Compiled>,
    /// Names these entries in the lookup caches: a table built (or changed) gets a new id; a
    /// clone, which has the same entries, keeps it.
    id: u64,
}

/// A fresh [`PriceTable::id`].
fn next_table_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Clone, Debug)]
struct Compiled {
    entry: PriceEntry,
    /// Canonical provider, lowercase.
    provider: Option<String>,
    patterns: Vec<Pattern>,
    user: bool,
}

#[derive(Clone, Debug)]
struct Pattern {
    /// Lowercase.
    text: String,
    glob: bool,
    /// Length of the text before the first `*`.
    literal_prefix: usize,
}

/// How specifically an entry matched; greater is more specific.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity {
    /// 3: exact on the name as sent, 2: exact on the base name, 1: glob.
    rank: u8,
    user: bool,
    provider_qualified: bool,
    literal_prefix: usize,
}

impl PriceTable {
    /// The built-in table (`config/prices.yaml`), parsed once per process: every GenAI
    /// processor (one per pipeline shard) and every check of a config starts from it.
    pub fn builtin() -> Result<Self, PriceError> {
        static BUILTIN: std::sync::OnceLock<Option<PriceTable>> = std::sync::OnceLock::new();
        let parse = || Self::new(parse_entries(BUILTIN_PRICES_YAML)?);
        match BUILTIN.get_or_init(|| parse().ok()) {
            Some(t) => Ok(t.clone()),
            // Only if the compiled-in file is broken (a test says it is not): the error again.
            None => parse(),
        }
    }

    /// The built-in table with user entries added; a user entry with a built-in's id replaces
    /// it, and a user entry wins over a built-in one that matches equally well.
    pub fn with_overrides(overrides: Vec<PriceEntry>) -> Result<Self, PriceError> {
        let mut table = Self::builtin()?;
        let overrides = Self::compile(overrides, true)?;
        table
            .entries
            .retain(|b| !overrides.iter().any(|o| o.entry.id == b.entry.id));
        table.entries.extend(overrides);
        // Other entries than the built-in table's: lookups cached for it do not apply.
        table.id = next_table_id();
        Ok(table)
    }

    /// A table of the given entries only.
    pub fn new(entries: Vec<PriceEntry>) -> Result<Self, PriceError> {
        Ok(PriceTable {
            entries: Self::compile(entries, false)?,
            id: next_table_id(),
        })
    }

    fn compile(entries: Vec<PriceEntry>, user: bool) -> Result<Vec<Compiled>, PriceError> {
        let mut problems = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if let Err(p) = e.validate() {
                problems.extend(p);
            }
            if entries[..i].iter().any(|other| other.id == e.id) {
                problems.push(format!("{}: duplicate id", e.id));
            }
        }
        if !problems.is_empty() {
            return Err(PriceError::Invalid(problems));
        }
        let compiled = entries
            .into_iter()
            .map(|entry| Compiled {
                provider: entry
                    .provider
                    .as_deref()
                    .map(|p| aliases::canonical_provider(p.trim()).to_ascii_lowercase()),
                patterns: std::iter::once(&entry.model)
                    .chain(&entry.aliases)
                    .map(|p| Pattern::new(p))
                    .collect(),
                // Validation guarantees the tiers are in increasing threshold order.
                entry,
                user,
            })
            .collect();
        Ok(compiled)
    }

    /// Every entry, built-in and user.
    pub fn entries(&self) -> impl Iterator<Item = &PriceEntry> {
        self.entries.iter().map(|c| &c.entry)
    }

    /// The entry that prices `model` from `provider`, if any (see the module docs).
    pub fn lookup(&self, provider: Option<&str>, model: &str) -> Option<&PriceEntry> {
        self.best_match(provider, model).map(|c| &c.entry)
    }

    /// The model's context window in tokens, if the table knows the model.
    pub fn context_window(&self, provider: Option<&str>, model: &str) -> Option<u64> {
        self.lookup(provider, model)?.context_window
    }

    /// The cost of a span.
    ///
    /// Cached tokens are priced once, at the cached rate: uncached input = input − cache_read −
    /// cache_write (saturating) at the input rate, cache reads at the cache-read rate and cache
    /// writes at the cache-write rate (each falling back to the input rate). Reasoning tokens are
    /// part of output tokens and priced as output, never added again. A per-call price is added
    /// once per span. With [`SuppliedCost::Prefer`], a cost the span supplies is used as is,
    /// except a supplied 0 for a call that used tokens (OpenLIT writes 0 for models it does not
    /// know).
    pub fn cost(&self, view: &GenAiView<'_>, mode: SuppliedCost) -> CostOutcome<'_> {
        let t = &view.tokens;
        let supplied = view
            .supplied_cost_usd
            .filter(|&c| mode == SuppliedCost::Prefer && !(c == 0.0 && used_tokens(t)));
        if let Some(supplied) = supplied {
            return CostOutcome::Priced(Cost {
                total_usd: supplied,
                input_usd: 0.0,
                output_usd: 0.0,
                cache_read_usd: 0.0,
                cache_write_usd: 0.0,
                request_usd: 0.0,
                source: CostSource::Supplied,
                price_id: None,
            });
        }
        let matched = [view.response_model, view.request_model]
            .into_iter()
            .flatten()
            .find_map(|model| self.best_match(view.provider, model));
        match matched {
            Some(c) => c.cost(t),
            None if view.model().is_none() => CostOutcome::Unpriced(Unpriced::NoModel),
            None => CostOutcome::Unpriced(Unpriced::UnknownModel),
        }
    }

    /// The entry that prices `model` from `provider`: from this thread's cache, else found by
    /// [`Self::best_index`] and remembered (a model that matches nothing included).
    fn best_match(&self, provider: Option<&str>, model: &str) -> Option<&Compiled> {
        let key = LookupRef {
            table: self.id,
            provider,
            model,
        };
        let cached = LOOKUPS.try_with(|cache| {
            let mut cache = cache.try_borrow_mut().ok()?;
            if let Some(&found) = cache.get(&key) {
                return Some(found);
            }
            let found = self.best_index(provider, model);
            cache.insert(&key, found);
            Some(found)
        });
        // Only while the thread ends (its cache is gone): look it up uncached.
        let index = match cached {
            Ok(Some(found)) => found,
            _ => self.best_index(provider, model),
        };
        self.entries.get(index?)
    }

    /// The index of the entry that prices `model` from `provider` (see the module docs): every
    /// entry's patterns are tried, and again among one vendor's when none agrees.
    fn best_index(&self, provider: Option<&str>, model: &str) -> Option<usize> {
        let names = ModelNames::new(model)?;
        let provider = provider.map(|p| aliases::canonical_provider(p.trim()));
        // Entries whose provider agrees with the span's, or that name none.
        let agreeing =
            self.entries
                .iter()
                .enumerate()
                .filter(|(_, c)| match (&c.provider, provider) {
                    (None, _) => true,
                    (Some(p), Some(q)) => p.eq_ignore_ascii_case(q),
                    (Some(_), None) => false,
                });
        if let Some(best) = most_specific(agreeing, &names) {
            return Some(best);
        }
        // Otherwise: a name that only one vendor's entries match.
        let mut vendor: Option<&str> = None;
        let matching = self
            .entries
            .iter()
            .filter(|c| c.specificity(&names).is_some());
        for p in matching.filter_map(|c| c.provider.as_deref()) {
            if vendor.is_some_and(|v| v != p) {
                return None;
            }
            vendor = Some(p);
        }
        let vendor = vendor?;
        let of_vendor = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, c)| c.provider.as_deref() == Some(vendor));
        most_specific(of_vendor, &names)
    }
}

/// The index of the most specific of `entries` (index, entry) that matches (the last of equals).
fn most_specific<'t>(
    entries: impl Iterator<Item = (usize, &'t Compiled)>,
    names: &ModelNames<'_>,
) -> Option<usize> {
    entries
        .filter_map(|(i, c)| c.specificity(names).map(|s| (s, i)))
        .max_by_key(|&(s, _)| s)
        .map(|(_, i)| i)
}

/// Most (provider, model) pairs one thread's cache remembers; past it the cache starts again
/// empty. Each pair costs about 100 bytes, and real traffic names a few dozen models.
const LOOKUP_CACHE_PAIRS: usize = 1024;

thread_local! {
    /// Per thread, so that the pipeline shards (each on its own thread while they run) never
    /// wait for one another or share a cache line: no lock, no atomic on the way to a price.
    static LOOKUPS: RefCell<LookupCache> = RefCell::new(LookupCache::default());
}

/// The entry index found for a (table, provider, model), none for a model that no entry prices.
#[derive(Default)]
struct LookupCache {
    found: HashMap<LookupKey, Option<usize>>,
}

impl LookupCache {
    fn get(&self, key: &LookupRef<'_>) -> Option<&Option<usize>> {
        self.found.get(key)
    }

    fn insert(&mut self, key: &LookupRef<'_>, found: Option<usize>) {
        if self.found.len() >= LOOKUP_CACHE_PAIRS {
            // A flood of distinct model names: start again rather than grow (the pairs in use
            // come back at one scan each).
            self.found.clear();
        }
        self.found.insert(
            LookupKey {
                table: key.table,
                provider: key.provider.map(Box::from),
                model: Box::from(key.model),
            },
            found,
        );
    }
}

/// A cached pair, as the span named it (before any trimming or canonicalisation: the lookup
/// does that, and always the same way for the same strings).
#[derive(PartialEq, Eq)]
struct LookupKey {
    table: u64,
    provider: Option<Box<str>>,
    model: Box<str>,
}

/// A pair to look up, borrowed from the span; hashes exactly as its [`LookupKey`], so that a hit
/// allocates nothing.
struct LookupRef<'a> {
    table: u64,
    provider: Option<&'a str>,
    model: &'a str,
}

fn hash_pair<H: Hasher>(h: &mut H, table: u64, provider: Option<&str>, model: &str) {
    h.write_u64(table);
    match provider {
        Some(p) => {
            h.write_u8(1);
            h.write(p.as_bytes());
            h.write_u8(0xff);
        }
        None => h.write_u8(0),
    }
    h.write(model.as_bytes());
    h.write_u8(0xff);
}

impl Hash for LookupKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_pair(h, self.table, self.provider.as_deref(), &self.model);
    }
}

impl Hash for LookupRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_pair(h, self.table, self.provider, self.model);
    }
}

impl Equivalent<LookupKey> for LookupRef<'_> {
    fn equivalent(&self, key: &LookupKey) -> bool {
        self.table == key.table
            && self.provider == key.provider.as_deref()
            && self.model == &*key.model
    }
}

/// Tokens were used (so a supplied cost of exactly 0 is not believable).
fn used_tokens(t: &Tokens) -> bool {
    t.input.unwrap_or(0) > 0 || t.output.unwrap_or(0) > 0
}

/// The rates that apply to one request.
struct Rates {
    input: Option<f64>,
    output: Option<f64>,
    cache_read: Option<f64>,
    cache_write: Option<f64>,
}

impl Compiled {
    fn specificity(&self, names: &ModelNames<'_>) -> Option<Specificity> {
        self.patterns
            .iter()
            .filter_map(|p| {
                let rank = if p.glob {
                    (glob_match(&p.text, names.full) || glob_match(&p.text, names.base))
                        .then_some(1)?
                } else if p.text.eq_ignore_ascii_case(names.full) {
                    3
                } else if p.text.eq_ignore_ascii_case(names.base) {
                    2
                } else {
                    return None;
                };
                Some(Specificity {
                    rank,
                    user: self.user,
                    provider_qualified: self.provider.is_some(),
                    literal_prefix: p.literal_prefix,
                })
            })
            .max()
    }

    fn rates(&self, input_tokens: u64) -> Rates {
        let e = &self.entry;
        match e
            .tiers
            .iter()
            .rev()
            .find(|t| input_tokens > t.above_input_tokens)
        {
            Some(t) => Rates {
                input: Some(t.input),
                output: Some(t.output),
                cache_read: t.cache_read.or(Some(t.input)),
                cache_write: t.cache_write.or(Some(t.input)),
            },
            None => Rates {
                input: e.input,
                output: e.output,
                cache_read: e.cache_read.or(e.input),
                cache_write: e.cache_write.or(e.input),
            },
        }
    }

    fn cost(&self, t: &Tokens) -> CostOutcome<'_> {
        if !t.any() && self.entry.per_request.is_none() {
            return CostOutcome::Unpriced(Unpriced::NoUsage);
        }
        let input = t.input.unwrap_or(0);
        let cache_read = t.cache_read.unwrap_or(0);
        let cache_write = t.cache_write.unwrap_or(0);
        let uncached = input.saturating_sub(cache_read).saturating_sub(cache_write);
        let rates = self.rates(input);
        let price = |tokens: u64, rate: Option<f64>| -> Option<f64> {
            if tokens == 0 {
                return Some(0.0);
            }
            rate.map(|per_million| tokens as f64 * per_million / 1e6)
        };
        let parts = (
            price(uncached, rates.input),
            price(cache_read, rates.cache_read),
            price(cache_write, rates.cache_write),
            price(t.output.unwrap_or(0), rates.output),
        );
        let (Some(input_usd), Some(cache_read_usd), Some(cache_write_usd), Some(output_usd)) =
            parts
        else {
            return CostOutcome::Unpriced(Unpriced::MissingRate);
        };
        let request_usd = self.entry.per_request.unwrap_or(0.0);
        CostOutcome::Priced(Cost {
            total_usd: input_usd + cache_read_usd + cache_write_usd + output_usd + request_usd,
            input_usd,
            output_usd,
            cache_read_usd,
            cache_write_usd,
            request_usd,
            source: CostSource::Computed,
            price_id: Some(&self.entry.id),
        })
    }
}

impl Pattern {
    fn new(text: &str) -> Self {
        let text = text.trim().to_ascii_lowercase();
        let literal_prefix = text.find('*').unwrap_or(text.len());
        Pattern {
            glob: literal_prefix < text.len(),
            literal_prefix,
            text,
        }
    }
}

/// A model name as sent (provider prefixes removed) and its base name (version suffixes removed).
struct ModelNames<'m> {
    full: &'m str,
    base: &'m str,
}

/// Leading segments of Bedrock model ids: cross-region prefixes and vendor prefixes
/// (`us.anthropic.claude-...`, `cohere.command-r-v1:0`).
const ID_PREFIXES: &[&str] = &[
    "us",
    "eu",
    "apac",
    "global",
    "us-gov",
    "jp",
    "au",
    "ca",
    "anthropic",
    "meta",
    "cohere",
    "mistral",
    "amazon",
    "ai21",
    "deepseek",
    "openai",
    "qwen",
    "writer",
];

impl<'m> ModelNames<'m> {
    fn new(model: &'m str) -> Option<Self> {
        let mut m = model.trim();
        // `openai/gpt-4o`, `models/gemini-2.5-pro`, `accounts/fireworks/models/llama-v3p1-8b-instruct`.
        if let Some((_, last)) = m.rsplit_once('/') {
            m = last;
        }
        for _ in 0..2 {
            match m.split_once('.') {
                Some((head, tail)) if ID_PREFIXES.iter().any(|p| p.eq_ignore_ascii_case(head)) => {
                    m = tail;
                }
                _ => break,
            }
        }
        // Bedrock `...-v2:0`, Vertex `...@20241022`, Ollama tags.
        if let Some(end) = m.find([':', '@']) {
            m = &m[..end];
        }
        (!m.is_empty()).then(|| ModelNames {
            full: m,
            base: strip_versions(m),
        })
    }
}

/// Removes trailing version decorations: `-latest`, `-YYYY-MM-DD`, `-YYYYMMDD`, `-NNN`, `-vN`.
fn strip_versions(mut m: &str) -> &str {
    loop {
        let b = m.as_bytes();
        let n = b.len();
        let digits = |from: usize, to: usize| b[from..to].iter().all(u8::is_ascii_digit);
        let next = if n > 7 && b[n - 7..].eq_ignore_ascii_case(b"-latest") {
            n - 7
        } else if n > 11
            && b[n - 11] == b'-'
            && b[n - 6] == b'-'
            && b[n - 3] == b'-'
            && digits(n - 10, n - 6)
            && digits(n - 5, n - 3)
            && digits(n - 2, n)
        {
            n - 11
        } else if let Some((head, last)) = m.rsplit_once('-') {
            let all_digits = !last.is_empty() && last.bytes().all(|c| c.is_ascii_digit());
            let version = last.len() > 1
                && last.as_bytes()[0].eq_ignore_ascii_case(&b'v')
                && last[1..].bytes().all(|c| c.is_ascii_digit());
            if (all_digits && (last.len() == 8 || last.len() == 3)) || version {
                head.len()
            } else {
                return m;
            }
        } else {
            return m;
        };
        if next == 0 {
            return m;
        }
        m = &m[..next];
    }
}

/// Case-insensitive glob match with `*` (the pattern is lowercase).
fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    if name.len() < first.len()
        || !name.as_bytes()[..first.len()].eq_ignore_ascii_case(first.as_bytes())
    {
        return false;
    }
    let mut rest = &name.as_bytes()[first.len()..];
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle.iter().filter(|p| !p.is_empty()) {
        let p = part.as_bytes();
        match rest
            .windows(p.len())
            .position(|w| w.eq_ignore_ascii_case(p))
        {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    let l = last.as_bytes();
    rest.len() >= l.len() && rest[rest.len() - l.len()..].eq_ignore_ascii_case(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        let n = |m| {
            ModelNames::new(m)
                .map(|n| (n.full.to_owned(), n.base.to_owned()))
                .unwrap()
        };
        assert_eq!(
            n("gpt-4o-2024-08-06"),
            ("gpt-4o-2024-08-06".into(), "gpt-4o".into())
        );
        assert_eq!(n("openai/gpt-4o"), ("gpt-4o".into(), "gpt-4o".into()));
        assert_eq!(
            n("claude-3-5-sonnet-20241022"),
            (
                "claude-3-5-sonnet-20241022".into(),
                "claude-3-5-sonnet".into()
            )
        );
        assert_eq!(
            n("us.anthropic.claude-3-5-sonnet-20241022-v2:0").1,
            "claude-3-5-sonnet"
        );
        assert_eq!(n("claude-3-5-sonnet-v2@20241022").1, "claude-3-5-sonnet");
        assert_eq!(n("models/gemini-2.0-flash-001").1, "gemini-2.0-flash");
        assert_eq!(n("claude-3-7-sonnet-latest").1, "claude-3-7-sonnet");
        assert_eq!(n("gpt-4.1").1, "gpt-4.1");
        assert_eq!(n("mistral-large-2411").1, "mistral-large-2411");
        assert_eq!(n("embed-english-v3.0").1, "embed-english-v3.0");
        assert!(ModelNames::new("openai/").is_none());
    }

    #[test]
    fn globs() {
        assert!(glob_match("gpt-4o*", "GPT-4o-2024-08-06"));
        assert!(glob_match("gemini-*-pro*", "gemini-2.5-pro-preview-05-06"));
        assert!(glob_match("*-instruct", "llama-v3p1-8b-instruct"));
        assert!(!glob_match("gpt-4o*", "gpt-4"));
        assert!(!glob_match("a*b*c", "abx"));
        assert!(glob_match("a**c", "abc"));
    }

    #[test]
    fn validation_reports_every_problem() {
        let entry = PriceEntry {
            id: "bad".into(),
            provider: Some(" ".into()),
            model: String::new(),
            aliases: vec!["**".into()],
            input: Some(-1.0),
            output: Some(f64::NAN),
            cache_read: None,
            cache_write: None,
            per_request: None,
            tiers: vec![
                PriceTier {
                    above_input_tokens: 10,
                    input: 1.0,
                    output: -2.0,
                    cache_read: None,
                    cache_write: None,
                },
                PriceTier {
                    above_input_tokens: 5,
                    input: 1.0,
                    output: 1.0,
                    cache_read: None,
                    cache_write: None,
                },
            ],
            context_window: Some(0),
            effective_date: Some("May 2025".into()),
            source: None,
        };
        let problems = entry.validate().unwrap_err();
        assert_eq!(problems.len(), 9, "{problems:#?}");
        assert!(problems.iter().all(|p| p.starts_with("bad: ")));
    }

    fn entry(id: &str, model: &str, input: f64) -> PriceEntry {
        PriceEntry {
            id: id.into(),
            provider: None,
            model: model.into(),
            aliases: Vec::new(),
            input: Some(input),
            output: None,
            cache_read: None,
            cache_write: None,
            per_request: None,
            tiers: Vec::new(),
            context_window: None,
            effective_date: None,
            source: None,
        }
    }

    fn cached_pairs() -> usize {
        LOOKUPS.with(|c| c.borrow().found.len())
    }

    #[test]
    fn repeated_lookups_come_from_the_cache_and_agree_with_a_scan() {
        let t = PriceTable::builtin().unwrap();
        let pairs = [
            (Some("openai"), "gpt-4o-2024-08-06"),
            (None, "gpt-4o-2024-08-06"),
            (Some("openai"), "claude-3-5-sonnet-20241022"),
            (Some("openai"), "acme-llm-7b"),
            (None, "openai/"),
        ];
        let scanned: Vec<Option<usize>> = pairs.iter().map(|&(p, m)| t.best_index(p, m)).collect();
        assert_eq!(scanned[0], scanned[1], "gpt-4o has a provider-less match");
        assert!(scanned[2].is_some(), "one vendor's model behind openai");
        assert_eq!(scanned[3], None, "unknown");
        assert_eq!(scanned[4], None, "no model name");
        for _ in 0..3 {
            let looked_up: Vec<Option<usize>> = pairs
                .iter()
                .map(|&(p, m)| {
                    t.best_match(p, m)
                        .map(|c| t.entries.iter().position(|e| std::ptr::eq(e, c)).unwrap())
                })
                .collect();
            assert_eq!(looked_up, scanned);
        }
        // The five pairs (the unknown ones too) are remembered for this table.
        let remembered = LOOKUPS.with(|c| {
            let c = c.borrow();
            pairs
                .iter()
                .filter(|&&(provider, model)| {
                    c.get(&LookupRef {
                        table: t.id,
                        provider,
                        model,
                    })
                    .is_some()
                })
                .count()
        });
        assert_eq!(remembered, 5);
    }

    #[test]
    fn tables_with_other_entries_never_share_a_cached_match() {
        let a = PriceTable::new(vec![entry("a", "m*", 1.0)]).unwrap();
        let b = PriceTable::new(vec![entry("b", "m*", 2.0)]).unwrap();
        let id = |t: &PriceTable| t.lookup(None, "m-1").map(|e| e.id.clone());
        for _ in 0..2 {
            assert_eq!(id(&a).as_deref(), Some("a"));
            assert_eq!(id(&b).as_deref(), Some("b"));
            assert_eq!(id(&a.clone()).as_deref(), Some("a"));
        }
        // A user entry for gpt-4o replaces what the built-in table (looked up first) found.
        let builtin = PriceTable::builtin().unwrap();
        assert_eq!(
            builtin
                .lookup(Some("openai"), "gpt-4o")
                .map(|e| e.id.as_str()),
            Some("openai/gpt-4o")
        );
        let mine = PriceTable::with_overrides(vec![entry("mine", "gpt-4o", 9.0)]).unwrap();
        assert_ne!(mine.id, builtin.id);
        assert_eq!(
            mine.lookup(Some("openai"), "gpt-4o").map(|e| e.id.as_str()),
            Some("mine")
        );
        assert_eq!(
            builtin
                .lookup(Some("openai"), "gpt-4o")
                .map(|e| e.id.as_str()),
            Some("openai/gpt-4o")
        );
    }

    #[test]
    fn a_flood_of_model_names_keeps_the_cache_bounded() {
        let t = PriceTable::new(vec![entry("a", "known", 1.0)]).unwrap();
        for n in 0..3 * LOOKUP_CACHE_PAIRS {
            assert!(t.lookup(None, &format!("unknown-{n}")).is_none());
            assert!(cached_pairs() <= LOOKUP_CACHE_PAIRS);
        }
        assert_eq!(t.lookup(None, "known").map(|e| e.id.as_str()), Some("a"));
        assert_eq!(t.lookup(None, "known").map(|e| e.id.as_str()), Some("a"));
    }

    #[test]
    fn user_yaml_errors() {
        assert!(matches!(
            parse_entries("prices: [{id: x, model: m, input: 1, colour: red}]"),
            Err(PriceError::Parse(_))
        ));
        let entries =
            parse_entries("prices: [{id: x, model: m, input: 1}, {id: x, model: '', input: -1}]")
                .unwrap();
        let Err(PriceError::Invalid(problems)) = PriceTable::with_overrides(entries) else {
            panic!("expected invalid entries");
        };
        assert_eq!(problems.len(), 3, "{problems:#?}");
    }
}
