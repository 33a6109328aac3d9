//! Assembling and running the whole topology from a config: exporters first, then pipelines,
//! then receivers; shutdown in the reverse order, draining within a grace period.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod config;
pub mod registry;

use crate::admin::{self, Health};
use crate::derived::{DerivedMetrics, Limits};
use crate::exporter::helper::{ExporterContext, ExporterHandle};
use crate::pipeline::{Fanin, Pipeline, PipelineInput, PipelineParts, StorageSettings};
use crate::receiver::otlp;
use crate::service::config::Config;
use crate::service::registry::BuildContext;
use crate::service::registry::ReceiverConfig;
use crate::signal::Signal;
use crate::telemetry::SelfMetrics;

/// Why the service could not start.
/// The processor chains of one pipeline, one per shard: each stage built from its config in the
/// pipeline's order; a stage with pipeline-wide state (SLO windows, anomaly baselines) built once
/// and handed to the other shards as a handle onto it.
pub fn build_chains(
    config: &Config,
    pipeline: &crate::service::config::PipelineConfig,
    ctx: &BuildContext,
    shards: usize,
) -> Result<Vec<Vec<Box<dyn crate::processor::Processor>>>, StartError> {
    let mut chains: Vec<Vec<Box<dyn crate::processor::Processor>>> = Vec::new();
    for _ in 0..shards {
        let mut chain = Vec::new();
        for name in &pipeline.processors {
            let Some(c) = config.processors.get(name) else {
                continue;
            };
            if let Some(shared) = chains.first().and_then(|c0| c0.get(chain.len())?.share()) {
                chain.push(shared);
                continue;
            }
            // Whole traces come from trace assembly in hold mode, earlier in the chain.
            let whole_traces = pipeline.processors.iter().take(chain.len()).any(|n| {
                matches!(
                    config.processors.get(n),
                    Some(crate::service::registry::ProcessorConfig::TraceAssembly(t))
                        if t.mode == crate::processor::trace_assembly::Mode::Hold
                )
            });
            let ctx = BuildContext {
                whole_traces,
                shards,
                ..ctx.clone()
            };
            chain.push(c.build(&ctx).map_err(|message| StartError::Processor {
                id: name.clone(),
                message,
            })?);
        }
        chains.push(chain);
    }
    Ok(chains)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Exporter(#[from] crate::exporter::helper::StartError),
    #[error("processor {id}: {message}")]
    Processor { id: String, message: String },
    #[error("{0}")]
    Pipeline(String),
    #[error("cannot listen for {what} on {address}: {source}")]
    Listen {
        what: String,
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running ragwatch.
pub struct Service {
    receivers: BTreeMap<String, otlp::RunningReceiver>,
    exporter_addrs: BTreeMap<String, SocketAddr>,
    derived: Arc<DerivedMetrics>,
    findings: Arc<crate::findings::Findings>,
    page: Option<Arc<crate::page::Page>>,
    stop_alerts: CancellationToken,
    alert_tasks: Vec<JoinHandle<()>>,
    admin_addr: SocketAddr,
    metrics: Arc<SelfMetrics>,
    health: Arc<Health>,
    stop_receivers: CancellationToken,
    stop_admin: CancellationToken,
    hard_stop: CancellationToken,
    pipelines: Vec<Pipeline>,
    exporter_tasks: Vec<JoinHandle<()>>,
    admin_task: JoinHandle<()>,
    shutdown_timeout: Duration,
}

/// Install the process-wide TLS crypto provider (ring). Harmless when called again.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Service {
    pub async fn start(config: &Config) -> Result<Service, StartError> {
        install_crypto_provider();
        let metrics = SelfMetrics::new();
        let health = Arc::new(Health::default());
        let stop_admin = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let stop_receivers = CancellationToken::new();

        let admin_config = &config.service.telemetry.metrics;
        let (admin_incoming, admin_addr) = admin::listen(admin_config, &metrics, &stop_admin)
            .await
            .map_err(|source| StartError::Listen {
                what: "admin".into(),
                address: admin_config.address.clone(),
                source,
            })?;
        let alerts_slot: crate::alerting::AlertsSlot = Default::default();
        let limits = &config.service.derived_metrics;
        let derived = Arc::new(DerivedMetrics::new(
            crate::derived::defs::DEFS,
            Limits {
                max_series_per_metric: limits.max_series_per_metric,
                series_ttl: limits.series_ttl,
            },
        ));
        let page = admin_config.page.enabled.then(|| {
            Arc::new(crate::page::Page::new(
                &admin_config.page,
                config.alerts.as_ref().and_then(|a| a.jaeger_url.as_deref()),
                metrics.clone(),
                derived.clone(),
                alerts_slot.clone(),
                config.page_targets(),
            ))
        });
        if let Some(p) = &page {
            // It ends when the admin server does (stop_admin).
            p.start(stop_admin.clone());
        }
        let admin_task = admin::serve(
            admin_incoming,
            metrics.clone(),
            health.clone(),
            alerts_slot.clone(),
            page.clone(),
            admin_config
                .auth
                .as_ref()
                .map(|a| a.bearer_token.expose().to_string()),
            stop_admin.clone(),
        );
        let ectx = ExporterContext {
            metrics: &metrics,
            derived: &derived,
            hard_stop: hard_stop.clone(),
            stop_servers: stop_admin.clone(),
        };
        let findings = Arc::new(crate::findings::Findings::default());
        let memory = config
            .service
            .memory_limiter
            .as_ref()
            .map(|m| crate::memory::start(m, stop_admin.clone()));
        let pctx = BuildContext {
            derived: derived.clone(),
            self_metrics: metrics.clone(),
            findings: findings.clone(),
            memory: memory.clone(),
            slo_burning: Default::default(),
            whole_traces: false,
            shards: 1,
        };

        // Exporters first, only those some pipeline uses.
        let used: std::collections::BTreeSet<&String> = config
            .service
            .pipelines
            .values()
            .flat_map(|p| &p.exporters)
            .collect();
        let mut exporters: BTreeMap<String, ExporterHandle> = BTreeMap::new();
        let mut exporter_tasks = Vec::new();
        let mut exporter_addrs = BTreeMap::new();
        for id in used {
            let Some(c) = config.exporters.get(id) else {
                continue;
            };
            let running = registry::start_exporter(id, c, &ectx)?;
            exporters.insert(id.clone(), running.handle);
            exporter_tasks.extend(running.tasks);
            if let Some(a) = running.addr {
                exporter_addrs.insert(id.clone(), a);
            }
        }
        health.set_exporters_started();

        // Alerting listens to the findings of the pipelines built below.
        let stop_alerts = CancellationToken::new();
        let mut alert_tasks = Vec::new();
        if let Some(a) = &config.alerts {
            let running = crate::alerting::start(
                a,
                &findings,
                derived.clone(),
                metrics.clone(),
                stop_alerts.clone(),
            );
            let _ = alerts_slot.set(running.engine);
            alert_tasks = running.tasks;
        }
        // Findings that went quiet are logged as ended even when nothing else is published.
        {
            let findings = findings.clone();
            let stop = stop_alerts.clone();
            alert_tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = every.tick() => findings.sweep(std::time::SystemTime::now()),
                    }
                }
            }));
        }

        // Pipelines.
        let mut pipelines = Vec::new();
        let mut inputs: BTreeMap<(String, Signal), Vec<PipelineInput>> = BTreeMap::new();
        for (id, p) in &config.service.pipelines {
            let Some(signal) = crate::service::config::PipelineConfig::signal_of(id) else {
                continue;
            };
            let assembles = p.processors.iter().any(|n| {
                matches!(
                    config.processors.get(n),
                    Some(crate::service::registry::ProcessorConfig::TraceAssembly(_))
                )
            });
            let shards = p
                .shards
                .unwrap_or(if assembles && signal == Signal::Traces {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    1
                });
            let pctx = BuildContext {
                shards,
                ..pctx.clone()
            };
            let mut chains = build_chains(config, p, &pctx, shards)?;
            for chain in &mut chains {
                // The page's tap, after the last stage of the pipelines it watches.
                if let Some(tap) = page.as_ref().filter(|_| signal == Signal::Traces)
                    && let Some(roots_are_requests) = config.page_watches(p)
                {
                    chain.push(tap.tap(roots_are_requests));
                }
            }
            let handles = p
                .exporters
                .iter()
                .filter_map(|e| exporters.get(e).cloned())
                .collect();
            let parts = PipelineParts {
                queue_size: p.queue_size,
                queue_max_bytes: p.queue_max_mib.saturating_mul(1 << 20),
                chains,
                exporters: handles,
                storage: p.storage.as_ref().map(|dir| StorageSettings {
                    dir: dir.clone(),
                    max_bytes: p.storage_max_mib.saturating_mul(1 << 20),
                    sync_interval: p.storage_sync_interval,
                }),
            };
            let pipeline = Pipeline::start(
                id,
                signal,
                parts,
                metrics.pipeline(id),
                hard_stop.clone(),
                stop_receivers.clone(),
            )
            .map_err(StartError::Pipeline)?;
            for r in &p.receivers {
                inputs
                    .entry((r.clone(), signal))
                    .or_default()
                    .push(pipeline.input.clone());
            }
            pipelines.push(pipeline);
        }
        // The pipelines hold the exporter handles now; drop ours so queues close with them.
        drop(exporters);

        // Receivers last.
        let mut receivers = BTreeMap::new();
        for (id, rc) in &config.receivers {
            let mut consumers = otlp::Consumers::default();
            let mut used = false;
            for s in Signal::ALL {
                if let Some(v) = inputs.remove(&(id.clone(), s)) {
                    used = true;
                    let f = Fanin::new(v);
                    match s {
                        Signal::Traces => consumers.traces = f,
                        Signal::Metrics => consumers.metrics = f,
                        Signal::Logs => consumers.logs = f,
                    }
                }
            }
            if !used {
                tracing::warn!(receiver = %id, "receiver is not used by any pipeline; not started");
                continue;
            }
            let running = match rc {
                ReceiverConfig::Otlp(oc) => otlp::start(
                    id,
                    oc,
                    consumers,
                    &metrics,
                    memory.clone(),
                    stop_receivers.clone(),
                )
                .await
                .map_err(|source| StartError::Listen {
                    what: format!("receiver {id}"),
                    address: describe_endpoints(oc),
                    source,
                })?,
                ReceiverConfig::DerivedMetrics(dc) => otlp::RunningReceiver {
                    id: id.clone(),
                    grpc_addr: None,
                    http_addr: None,
                    tasks: vec![crate::receiver::derived::start(
                        id,
                        dc,
                        consumers.metrics,
                        derived.clone(),
                        &metrics,
                        stop_receivers.clone(),
                    )],
                },
            };
            receivers.insert(id.clone(), running);
        }
        health.set_receivers_listening();
        tracing::info!(admin = %admin_addr, "ragwatch is ready");
        Ok(Service {
            receivers,
            exporter_addrs,
            derived,
            findings,
            page,
            stop_alerts,
            alert_tasks,
            admin_addr,
            metrics,
            health,
            stop_receivers,
            stop_admin,
            hard_stop,
            pipelines,
            exporter_tasks,
            admin_task,
            shutdown_timeout: config.service.shutdown_timeout,
        })
    }

    /// Where a receiver's gRPC server listens.
    pub fn grpc_addr(&self, receiver: &str) -> Option<SocketAddr> {
        self.receivers.get(receiver).and_then(|r| r.grpc_addr)
    }

    /// Where a receiver's HTTP server listens.
    pub fn http_addr(&self, receiver: &str) -> Option<SocketAddr> {
        self.receivers.get(receiver).and_then(|r| r.http_addr)
    }

    /// Where an exporter that serves (prometheus) listens.
    pub fn exporter_addr(&self, exporter: &str) -> Option<SocketAddr> {
        self.exporter_addrs.get(exporter).copied()
    }

    /// The store of metrics derived from spans.
    pub fn derived(&self) -> &Arc<DerivedMetrics> {
        &self.derived
    }

    /// The findings hub (SLO burn, budgets, anomalies).
    pub fn findings(&self) -> &Arc<crate::findings::Findings> {
        &self.findings
    }

    /// The page's data (None when `page.enabled` is false).
    pub fn page(&self) -> Option<&Arc<crate::page::Page>> {
        self.page.as_ref()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn metrics(&self) -> &Arc<SelfMetrics> {
        &self.metrics
    }

    /// Stop accepting, drain pipelines and exporter queues within the grace period, stop.
    /// Whatever cannot be delivered in time is counted as dropped.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.shutdown_timeout;
        tracing::info!(grace = ?self.shutdown_timeout, "shutting down: receivers stop accepting, pipelines drain");
        self.health.set_shutting_down();

        // 1. Receivers: stop accepting, finish requests in flight.
        self.stop_receivers.cancel();
        let receiver_tasks: Vec<_> = self.receivers.into_values().flat_map(|r| r.tasks).collect();
        drain(receiver_tasks, deadline, &self.hard_stop, "receivers").await;

        // 2. Pipelines: their inputs close once the receivers are gone; they flush and end.
        let mut logs = Vec::new();
        let mut storage_tasks = Vec::new();
        let mut pipeline_tasks = Vec::new();
        for p in self.pipelines {
            logs.extend(p.log);
            storage_tasks.extend(p.storage_tasks);
            pipeline_tasks.push(p.task);
        }
        drain(pipeline_tasks, deadline, &self.hard_stop, "pipelines").await;

        // 3. Exporters: queues close with the pipelines; consumers drain them.
        drain(self.exporter_tasks, deadline, &self.hard_stop, "exporters").await;
        // 3b. Pipeline logs: every release has been sent; write them and fsync.
        for log in &logs {
            log.close();
        }
        drain(storage_tasks, deadline, &self.hard_stop, "pipeline logs").await;
        // 4. Alerting: its state is saved at every change; stop its tasks.
        self.stop_alerts.cancel();
        for t in self.alert_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        self.stop_admin.cancel();
        let _ = self.admin_task.await;
        tracing::info!("shutdown complete");
    }
}

/// Wait for every task until the deadline. Past it, fire the hard stop, which makes every
/// stage count what it still holds as dropped, and give the tasks a moment to do so.
async fn drain(
    tasks: Vec<JoinHandle<()>>,
    deadline: Instant,
    hard_stop: &CancellationToken,
    what: &str,
) {
    let mut all = Box::pin(async move {
        for t in tasks {
            let _ = t.await;
        }
    });
    let finished = tokio::select! {
        biased;
        _ = &mut all => true,
        _ = tokio::time::sleep_until(deadline) => false,
    };
    if !finished {
        tracing::error!(
            what,
            "shutdown grace period ran out; what is still held is counted as dropped"
        );
        hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
    }
}

fn describe_endpoints(c: &otlp::OtlpReceiverConfig) -> String {
    let mut v = Vec::new();
    if let Some(g) = &c.protocols.grpc {
        v.push(format!("grpc {}", g.endpoint));
    }
    if let Some(h) = &c.protocols.http {
        v.push(format!("http {}", h.endpoint));
    }
    v.join(", ")
}
