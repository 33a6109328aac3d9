//! A webhook sink for alert notifications: records every request and answers with the statuses
//! it was told to (then 200).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Inner {
    answers: VecDeque<u16>,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct Sink {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

async fn take(
    State(s): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut g = s.lock().expect("sink lock");
    let status = g.answers.pop_front().unwrap_or(200);
    g.received.push(Received {
        headers,
        body: body.to_vec(),
        status,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

impl Sink {
    /// A sink on 127.0.0.1 answering `answers` in turn, then 200.
    pub async fn start(answers: &[u16]) -> Sink {
        let inner = Arc::new(Mutex::new(Inner {
            answers: answers.iter().copied().collect(),
            received: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink");
        let addr = listener.local_addr().expect("sink addr");
        let app = Router::new()
            .route("/", post(take))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Sink { inner, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Every request, answered or not.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("sink lock").received.clone()
    }

    /// The requests answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    pub async fn wait(&self, limit: Duration, cond: impl Fn(&Sink) -> bool) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < end {
            if cond(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cond(self)
    }
}
