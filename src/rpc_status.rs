//! google.rpc.Status, the error body of OTLP/HTTP responses (details are not needed here).

use serde::Serialize;

#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}
